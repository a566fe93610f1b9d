"""The application behind the proxies, systemd and Kubernetes examples: /health for
the health checks and probes, and the client's address as the proxy forwarded it."""


def handle(method, query, args, headers, body, ctx):
    if query == "/health":
        return "ok\n", 200, {"content-type": "text/plain"}
    greeting = "Hello, %s over %s\n" % (ctx["client_ip"], ctx["scheme"])
    return greeting, 200, {"content-type": "text/plain"}
