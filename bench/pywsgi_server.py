"""gevent.pywsgi.WSGIServer serving bench.apps.wsgi_app: PORT [CERT KEY]."""

import sys

from gevent import monkey

monkey.patch_all()

from gevent.pywsgi import WSGIServer  # noqa: E402

from bench.apps import wsgi_app  # noqa: E402

if __name__ == "__main__":
    tls = {"certfile": sys.argv[2], "keyfile": sys.argv[3]} if len(sys.argv) > 3 else {}
    WSGIServer(("127.0.0.1", int(sys.argv[1])), wsgi_app, log=None, backlog=1024, **tls).serve_forever()
