"""One file, with ranges and validators, from a handler that chose it.

    REPORT_PATH=/srv/reports/latest.pdf lilush-http send_file:handle
"""

import os

from lilush_http import static

REPORT = os.environ.get("REPORT_PATH", "/srv/reports/latest.pdf")


def handle(method, query, args, headers, body, ctx):
    if query == "/reports/latest.pdf":
        return static.send_file(REPORT, method, headers, cache_control="no-cache")
    return "not here\n", 404, {"content-type": "text/plain"}
