"""``lilush-http [MODULE:HANDLER] [options]``: serve a handler, a WSGI app (--wsgi),
or the files under --root."""

import argparse
import importlib
import json
import os
import signal
import sys


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="lilush-http",
        description="Serve a Lilush-style handler (module:function) or, without one, static files.")
    parser.add_argument("handler", nargs="?", metavar="MODULE:HANDLER",
                        help="handle(method, query, args, headers, body, ctx) to serve")
    parser.add_argument("--ip", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="bind port (default 8080; 0 picks a free one)")
    parser.add_argument("--config", metavar="FILE.json", help="config table as JSON")
    parser.add_argument("--root", default=".", help="directory served without a handler (default: .)")
    parser.add_argument("--log-level", choices=["debug", "access", "info", "warn", "error"])
    parser.add_argument("--workers", type=int, help="processes sharing the port (default 1)")
    parser.add_argument("--tls-cert", metavar="CERT.pem", help="certificate of the default TLS pair")
    parser.add_argument("--tls-key", metavar="KEY.pem", help="private key of the default TLS pair")
    parser.add_argument("--metrics", metavar="IP:PORT", help="serve Prometheus metrics on this address")
    parser.add_argument("--wsgi", metavar="MODULE:APP", help="serve a WSGI application instead of a handler")
    parser.add_argument("--no-monkey-patch", action="store_true",
                        help="do not run gevent.monkey.patch_all() before importing the handler")
    return parser.parse_args(argv)


def load_handle(spec, what="handler"):
    """Import ``module:function`` (the current directory is on the import path)."""
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name or not name:
        return None, "%s: expected MODULE:FUNCTION, got %r" % (what, spec)
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        return None, "%s: cannot import %s: %s" % (what, module_name, exc)
    handle = getattr(module, name, None)
    if not callable(handle):
        return None, "%s: %s has no function %r" % (what, module_name, name)
    return handle, None


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
    for key in ("ip", "port", "log_level", "workers"):
        value = getattr(args, key)
        if value is not None:
            config[key] = value
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


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.no_monkey_patch:
        # Before the handler's module (and its requests, redis, ...) is imported.
        from gevent import monkey
        monkey.patch_all()
    import gevent
    from . import server
    from .static import make_handle

    config, err = build_config(args)
    if err is None:
        if args.handler and args.wsgi:
            err = "give a handler or --wsgi, not both"
        elif args.handler:
            handle, err = load_handle(args.handler)
        elif args.wsgi:
            app, err = load_handle(args.wsgi, "wsgi")
            if err is None:
                from .wsgi import to_handle
                handle = to_handle(app)
        elif not os.path.isdir(args.root):
            err = "root: not a directory: %s" % args.root
        else:
            handle = make_handle(args.root)
    if err:
        print("lilush-http: %s" % err, file=sys.stderr)
        return 2
    srv, err = server.new(config, handle)
    if srv is None:
        print("lilush-http: %s" % err, file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, srv.stop)
    _, err = srv.serve()
    if err:
        print("lilush-http: %s" % err, file=sys.stderr)
        return 1
    return 0
