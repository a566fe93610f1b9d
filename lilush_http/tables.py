"""Checks shared by the optional config tables (``redis``, ``metrics``)."""


def check_table(name, cfg, defaults, expected):
    """(the table merged over ``defaults``, None), or (None, why it is not a table of
    their keys; ``expected`` names them); (None, None) for no table (the part is off)."""
    if cfg is None:
        return None, None
    if not isinstance(cfg, dict):
        return None, "%s: expected a table%s, got %r" % (name, " {%s}" % expected if name == "metrics" else "", cfg)
    unknown = set(cfg) - set(defaults)
    if unknown:
        return None, "%s: unknown key %r (expected %s)" % (name, sorted(unknown)[0], expected)
    return dict(defaults, **cfg), None


def port_problem(key, port, lowest):
    """Why ``port`` is no port number from ``lowest`` up, naming the ``key``, or None."""
    if type(port) is not int or not lowest <= port <= 65535:
        return "%s: expected an integer from %d to 65535, got %r" % (key, lowest, port)
    return None
