"""A handler that reads a big upload as it arrives, instead of whole in memory.

    lilush-http upload:handle --max-body-size 1073741824
"""

from lilush_http.body import streamed_body


@streamed_body
def handle(method, query, args, headers, body, ctx):
    if method != "PUT" or query != "/upload":
        return "PUT a body to /upload\n", 404, {"content-type": "text/plain"}
    if body is None:
        return "no body\n", 400, {"content-type": "text/plain"}
    size = 0
    with open("upload.bin", "wb") as out:
        while True:
            block = body.read(65536)
            if not block:
                break
            out.write(block)
            size += len(block)
    return "stored %d bytes\n" % size, 201, {"content-type": "text/plain"}
