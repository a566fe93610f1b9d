"""lilush_http: Lilush's ``http.server`` for Python, on gevent.

``from lilush_http import server``; ``srv, err = server.new(config, handle)``.
"""

__version__ = "0.1.0"
