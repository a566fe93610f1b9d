"""The ``redis`` config: one redis-py connection pool per configure, handed to
handlers as ``ctx["redis"]``: to host and port, a unix socket, a ``url``
(redis://, rediss://, unix://), or the master Sentinel names (``sentinels``,
``service_name``).

Nothing connects at configure time: with Redis down the server starts and
serves, and a handler using the client gets redis-py's own ConnectionError.
"""

from .tables import check_table, port_problem

DEFAULTS = {"host": "127.0.0.1", "port": 6379, "db": 0, "password": None,
            "unix_socket": None, "timeout": 5, "max_connections": 50,
            "url": None, "sentinels": None, "service_name": None}
URL_SCHEMES = ("redis://", "rediss://", "unix://")


def validate(cfg):
    """The first problem in the ``redis`` table, naming the key, or None."""
    merged, problem = check_table("redis", cfg, DEFAULTS, ", ".join(DEFAULTS))
    if merged is None:
        return problem
    problem = port_problem("redis.port", merged["port"], 1)
    if problem:
        return problem
    if not isinstance(merged["host"], str) or not merged["host"]:
        return "redis.host: expected a host name, got %r" % (merged["host"],)
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
    return _validate_url_and_sentinels(cfg, merged)


def _validate_url_and_sentinels(cfg, merged):
    """``url`` and ``sentinels`` each say where Redis is: with either, host, port
    and unix_socket must not be given, nor both of them."""
    url, sentinels = merged["url"], merged["sentinels"]
    if url is not None and (not isinstance(url, str) or not url.startswith(URL_SCHEMES)):
        return "redis.url: expected a redis://, rediss:// or unix:// URL, got %r" % (url,)
    if sentinels is not None:
        if not isinstance(sentinels, (list, tuple)) or not sentinels or not all(
                isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)
                and type(pair[1]) is int and 1 <= pair[1] <= 65535 for pair in sentinels):
            return "redis.sentinels: expected a list of [host, port] pairs, got %r" % (sentinels,)
        if not isinstance(merged["service_name"], str) or not merged["service_name"]:
            return "redis.service_name: the master's name is required with sentinels"
    elif merged["service_name"] is not None:
        return "redis.service_name: given without sentinels"
    given = [key for key in ("url", "sentinels") if merged[key] is not None]
    if len(given) == 2:
        return "redis.url: give url or sentinels, not both"
    place = [key for key in ("host", "port", "unix_socket") if key in cfg]
    if given and place:
        return "redis.%s: give %s or %s, not both" % (place[0], given[0], place[0])
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
    if cfg["sentinels"]:
        # Nothing connects yet: the pool asks the sentinels for the master when it needs a connection.
        from redis.sentinel import Sentinel
        timeouts = {"socket_timeout": cfg["timeout"], "socket_connect_timeout": cfg["timeout"]}
        sentinel = Sentinel([tuple(pair) for pair in cfg["sentinels"]], sentinel_kwargs=timeouts, **timeouts)
        del options["timeout"]  # a wait for a free connection: BlockingConnectionPool's alone
        return sentinel.master_for(cfg["service_name"], **options), None
    if cfg["url"]:
        pool = redis.BlockingConnectionPool.from_url(cfg["url"], **options)  # the URL's own settings win
    elif cfg["unix_socket"]:
        pool = redis.BlockingConnectionPool(connection_class=redis.UnixDomainSocketConnection,
                                            path=cfg["unix_socket"], **options)
    else:
        pool = redis.BlockingConnectionPool(host=cfg["host"], port=cfg["port"], **options)
    return redis.Redis(connection_pool=pool), None
