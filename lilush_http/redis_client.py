"""The ``redis`` config: one redis-py connection pool per configure, handed to
handlers as ``ctx["redis"]``.

Nothing connects at configure time: with Redis down the server starts and
serves, and a handler using the client gets redis-py's own ConnectionError.
"""

DEFAULTS = {"host": "127.0.0.1", "port": 6379, "db": 0, "password": None,
            "unix_socket": None, "timeout": 5, "max_connections": 50}


def validate(cfg):
    """The first problem in the ``redis`` table, naming the key, or None."""
    if cfg is None:
        return None
    if not isinstance(cfg, dict):
        return "redis: expected a table, got %r" % (cfg,)
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        return "redis: unknown key %r (expected %s)" % (sorted(unknown)[0], ", ".join(DEFAULTS))
    merged = dict(DEFAULTS, **cfg)
    if not isinstance(merged["host"], str) or not merged["host"]:
        return "redis.host: expected a host name, got %r" % (merged["host"],)
    port = merged["port"]
    if type(port) is not int or not 1 <= port <= 65535:
        return "redis.port: expected an integer from 1 to 65535, got %r" % (port,)
    if type(merged["db"]) is not int or merged["db"] < 0:
        return "redis.db: expected an integer >= 0, got %r" % (merged["db"],)
    if merged["password"] is not None and not isinstance(merged["password"], str):
        return "redis.password: expected a string"
    if merged["unix_socket"] is not None and not isinstance(merged["unix_socket"], str):
        return "redis.unix_socket: expected a path, got %r" % (merged["unix_socket"],)
    if type(merged["timeout"]) not in (int, float) or not merged["timeout"] > 0:
        return "redis.timeout: expected a positive number of seconds, got %r" % (merged["timeout"],)
    if type(merged["max_connections"]) is not int or merged["max_connections"] < 1:
        return "redis.max_connections: expected a positive integer, got %r" % (merged["max_connections"],)
    return None


def build(cfg):
    """``(client, None)`` on a new pool, ``(None, None)`` when unset, ``(None, err)``."""
    if cfg is None:
        return None, None
    try:
        import redis
    except ImportError:
        return None, "redis: the redis package is not installed (pip install redis)"
    cfg = dict(DEFAULTS, **cfg)
    options = {"db": cfg["db"], "password": cfg["password"], "max_connections": cfg["max_connections"],
               "timeout": cfg["timeout"], "socket_timeout": cfg["timeout"],
               "socket_connect_timeout": cfg["timeout"]}
    if cfg["unix_socket"]:
        pool = redis.BlockingConnectionPool(connection_class=redis.UnixDomainSocketConnection,
                                            path=cfg["unix_socket"], **options)
    else:
        pool = redis.BlockingConnectionPool(host=cfg["host"], port=cfg["port"], **options)
    return redis.Redis(connection_pool=pool), None
