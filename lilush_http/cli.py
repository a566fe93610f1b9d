"""``lilush-http [MODULE:HANDLER] [options]``: serve a handler, a WSGI app (--wsgi),
or the files under --root.

The process is a supervisor (supervisor.py): its workers import the handler,
SIGHUP reloads the config and the handler's code, SIGUSR1 reopens the logs.
"""

import argparse
import importlib
import json
import logging
import os
import sys
import traceback

from . import __version__
from . import config as configuration

# Config keys with a hand-written flag (the other scalar keys get a generated one).
OWN_FLAGS = ("ip", "port", "log_level", "workers", "access_log", "error_log",
             "unix_socket", "fd", "reuse_port", "trusted_proxies", "proxy_protocol", "metrics",
             "http2")


def _scalar(text):
    """A generated flag's value: an integer, else a number, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _boolean(text):
    """A generated flag's true/false value."""
    words = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
    if text.lower() not in words:
        raise argparse.ArgumentTypeError("expected true or false, got %r" % text)
    return words[text.lower()]


def _keys_help():
    lines = ["config keys and their defaults (any of them: --set KEY=VALUE, JSON values, dotted keys):"]
    for key, value in configuration.flat():
        lines.append("  %-32s %s" % (key, json.dumps(value)))
    lines.append("signals: TERM/INT stop gracefully, HUP reloads (config, handler code, certificates), "
                 "USR1 reopens the log files")
    return "\n".join(lines)


def parse_args(argv):
    return make_parser().parse_args(argv)


def make_parser():
    """The command line's parser (docs/cli.rst is generated from it)."""
    parser = argparse.ArgumentParser(
        prog="lilush-http", usage="%(prog)s [MODULE:HANDLER] [options]",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_keys_help(),
        description="Serve a Lilush-style handler (module:function) or, without one, static files.")
    parser.add_argument("--version", action="version", version="lilush-http %s" % __version__)
    parser.add_argument("handler", nargs="?", metavar="MODULE:HANDLER",
                        help="handle(method, query, args, headers, body, ctx) to serve")
    parser.add_argument("--ip", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="bind port (default 8080; 0 picks a free one)")
    parser.add_argument("--config", metavar="FILE.json", help="config table as JSON")
    parser.add_argument("--root", default=".", help="directory served without a handler (default: .)")
    parser.add_argument("--cache-control", metavar="VALUE",
                        help="Cache-Control sent with every file under --root (e.g. 'public, max-age=3600')")
    parser.add_argument("--no-listing", action="store_true",
                        help="answer 404 for a directory under --root without index.html")
    parser.add_argument("--log-level", choices=["debug", "access", "info", "warn", "error"],
                        help="messages logged: access logs every request (default access)")
    parser.add_argument("--workers", type=int, help="processes sharing the port (default 1)")
    parser.add_argument("--tls-cert", metavar="CERT.pem", help="certificate of the default TLS pair")
    parser.add_argument("--tls-key", metavar="KEY.pem", help="private key of the default TLS pair")
    parser.add_argument("--metrics", metavar="IP:PORT", help="serve Prometheus metrics on this address")
    parser.add_argument("--wsgi", metavar="MODULE:APP", help="serve a WSGI application instead of a handler")
    parser.add_argument("--unix", metavar="PATH", help="listen on a unix socket instead of ip/port")
    parser.add_argument("--unix-socket-mode", metavar="MODE", help="mode of the unix socket file, octal (e.g. 0660)")
    parser.add_argument("--fd", type=int, metavar="N", help="serve on the listening socket inherited as descriptor N")
    parser.add_argument("--reuse-port", action="store_true", default=None,
                        help="SO_REUSEPORT: another instance may bind the same port (hand-overs)")
    parser.add_argument("--trusted-proxies", metavar="A,B",
                        help="addresses or CIDRs whose forwarding headers are believed (default 127.0.0.1,::1)")
    parser.add_argument("--proxy-protocol", action="store_true", default=None,
                        help="every connection starts with a PROXY protocol v1/v2 header")
    parser.add_argument("--no-http2", dest="http2", action="store_false", default=None,
                        help="serve HTTP/1.1 only: no ALPN h2, no prior-knowledge HTTP/2 (default: both on)")
    parser.add_argument("--no-monkey-patch", action="store_true",
                        help="do not run gevent.monkey.patch_all() before importing the handler")
    parser.add_argument("--access-log", metavar="PATH|-", help="access log file, - for stderr (default -)")
    parser.add_argument("--error-log", metavar="PATH|-", help="error log file, - for stderr (default -)")
    for key, default in configuration.flat():  # nested keys too: --compression-level
        if key not in OWN_FLAGS and type(default) in (int, float, str, bool):
            parser.add_argument("--" + key.replace("_", "-").replace(".", "-"), dest=key, metavar="VALUE",
                                type=_boolean if type(default) is bool else _scalar,
                                help="config %s (default %s)" % (key, json.dumps(default)))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="set any config key: dotted for nested ones, the value as JSON "
                             "(e.g. --set compression.level=9 --set 'log_headers=[\"referer\"]')")
    return parser


def check_spec(spec, what="handler"):
    """The error of a malformed ``module:function``, or None."""
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name or not name:
        return "%s: expected MODULE:FUNCTION, got %r" % (what, spec)
    return None


def load_handle(spec, what="handler"):
    """Import ``module:function`` (the current directory is on the import path)."""
    err = check_spec(spec, what)
    if err:
        return None, err
    module_name, _, name = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):  # the module itself is missing
            return None, "%s: cannot import %s: %s" % (what, module_name, exc)
        return None, "%s: cannot import %s:\n%s" % (what, module_name, _import_traceback(exc))
    except BaseException as exc:
        return None, "%s: cannot import %s:\n%s" % (what, module_name, _import_traceback(exc))
    handle = getattr(module, name, None)
    if not callable(handle):
        return None, "%s: %s has no function %r" % (what, module_name, name)
    return handle, None


def _import_traceback(exc):
    """The traceback of an exception raised by importing the handler's module,
    without the frames of the import machinery."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
              if not frame.filename.startswith("<frozen") and frame.filename not in (__file__, importlib.__file__)]
    return ("Traceback (most recent call last):\n" + "".join(traceback.format_list(frames))
            + "".join(traceback.format_exception_only(type(exc), exc))).rstrip()


def _put(config, key, value):
    """Set the dotted ``key`` in ``config``, making the nested tables on the way."""
    *path, last = key.split(".")
    table = config
    for part in path:
        if not isinstance(table.get(part), dict):
            table[part] = {}
        table = table[part]
    table[last] = value


def build_config(args):
    config = {}
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                config = json.load(f)
        except (OSError, ValueError) as exc:
            return None, "config: cannot read %s: %s" % (args.config, exc)
        if not isinstance(config, dict):
            return None, "config: %s must hold a JSON object" % args.config
    for item in args.set:
        key, equals, text = item.partition("=")
        if not equals or not key:
            return None, "--set: expected KEY=VALUE, got %r" % item
        try:
            value = json.loads(text)
        except ValueError:
            value = text  # a plain string needs no JSON quotes
        _put(config, key, value)
    for key, _ in configuration.flat():
        value = getattr(args, key, None)
        if value is not None:
            _put(config, key, value)
    if args.unix is not None:
        config["unix_socket"] = args.unix
    if args.trusted_proxies is not None:
        config["trusted_proxies"] = [a.strip() for a in args.trusted_proxies.split(",") if a.strip()]
    if args.metrics:
        ip, colon, port = args.metrics.rpartition(":")
        if not colon or not ip or not port.isdigit():
            return None, "--metrics: expected IP:PORT, got %r" % args.metrics
        config["metrics"] = {"ip": ip.strip("[]"), "port": int(port)}
    if bool(args.tls_cert) != bool(args.tls_key):
        return None, "--tls-cert and --tls-key go together"
    if args.tls_cert:
        ssl = config.get("ssl") if isinstance(config.get("ssl"), dict) else {}
        config["ssl"] = dict(ssl, default={"cert": args.tls_cert, "key": args.tls_key})
    return config, None


class App:
    """What the workers serve, rebuilt on every reload: the config (--config read
    again, then the command line) and the handler, imported in each worker."""

    def __init__(self, args):
        self.args = args

    def load_config(self):
        """``(config, None)`` once it is valid (certificates and log files open), or ``(None, err)``."""
        from . import server

        config, err = build_config(self.args)
        if err:
            return None, err
        config.setdefault("access_log", "-")
        for warning in configuration.unknown_keys(config):
            logging.getLogger("lilush_http").warning("config: %s", warning)
        srv, err = server.new(config)
        if srv is None:
            return None, err
        return srv.cfg, None

    def check(self):
        """The error of arguments that cannot work, found before any worker starts."""
        args = self.args
        if args.handler and args.wsgi:
            return "give a handler or --wsgi, not both"
        if args.handler:
            return check_spec(args.handler)
        if args.wsgi:
            return check_spec(args.wsgi, "wsgi")
        if not os.path.isdir(args.root):
            return "root: not a directory: %s" % args.root
        return None

    def build(self, config):
        """In a worker: import the handler and build its server; ``(server, err)``."""
        from . import server
        from .static import make_handle

        args = self.args
        if args.handler:
            handle, err = load_handle(args.handler)
        elif args.wsgi:
            app, err = load_handle(args.wsgi, "wsgi")
            if err is None:
                from .wsgi import to_handle
                handle = to_handle(app)
        else:
            handle, err = make_handle(args.root, listing=not args.no_listing,
                                     cache_control=args.cache_control), None
        if err:
            return None, err
        return server.new(config, handle)


def untrack_greenlet_tree():
    """Turn off gevent's record of who spawned each greenlet (its stack, its parent),
    which costs about 10,000 instructions per connection, unless the environment
    asks for it (GEVENT_TRACK_GREENLET_TREE). Before any greenlet is made."""
    import gevent

    if "GEVENT_TRACK_GREENLET_TREE" not in os.environ:
        gevent.config.track_greenlet_tree = False


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    untrack_greenlet_tree()
    if not args.no_monkey_patch:
        # Before the handler's module (and its requests, redis, ...) is imported.
        from gevent import monkey
        monkey.patch_all()
    from . import server
    from .transport import listeners
    from .log import ensure_output

    ensure_output(logging.getLogger("lilush_http"))
    inherited = listeners.systemd_fds()  # socket activation: LISTEN_FDS/LISTEN_PID name us
    if inherited and args.fd is None:
        args.fd = inherited[0]  # kept in args, so that a reload serves the same socket
    app = App(args)
    err = app.check()
    config = None
    if err is None:
        config, err = app.load_config()
    if err:
        print("lilush-http: %s" % err, file=sys.stderr)
        return 2
    srv, err = server.new(config)
    _, err = srv.serve(app)
    if err:
        print("lilush-http: %s" % err, file=sys.stderr)
        return 1 if err.startswith("failed to bind") else 2  # else the workers could not start
    return 0
