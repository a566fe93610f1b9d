"""A visit counter in Redis, the client given to the handler as ctx["redis"].

    lilush-http redis_counter:handle --set redis.port=6379
"""


def handle(method, query, args, headers, body, ctx):
    if query != "/":
        return "not here\n", 404, {"content-type": "text/plain"}
    hits = ctx["redis"].incr("hits")
    return "visit %d\n" % hits, 200, {"content-type": "text/plain"}
