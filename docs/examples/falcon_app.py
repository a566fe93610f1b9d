"""A Falcon application: lilush-http --wsgi falcon_app:app"""

import falcon


class Hello:
    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "hello from Falcon\n"

    def on_post(self, req, resp):
        resp.media = {"received": len(req.stream.read())}  # chunked uploads too


app = falcon.App()
app.add_route("/", Hello())
