"""The floor under an HTTP/2 stream: the h2 library alone, in process, no sockets. A client
H2Connection makes h2load's GET on one connection (stream after stream, HPACK state kept);
the server side is timed: receive_data, send_headers, send_data(end_stream), data_to_send. "ours" is
the server's own h2 configuration (its header checks then not h2's: their cost is not in the figure),
"default" h2's (header checks included).

    python bench/h2_floor.py [--requests 20000] [--repeat 5] [--config ours|default] [--batch 10]

Prints the server's CPU us per request (median of --repeat), the figure the driver is compared with.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from h2.config import H2Configuration  # noqa: E402
from h2.connection import H2Connection  # noqa: E402
from h2.events import RequestReceived  # noqa: E402

REQUEST = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "127.0.0.1:8080"),
           ("accept", "*/*"), ("accept-encoding", "gzip, deflate"), ("user-agent", "h2load nghttp2/1.52.0")]
RESPONSE = [(":status", "200"), ("date", "Wed, 02 Dec 2026 18:00:00 GMT"), ("server", "lilush"),
            ("content-type", "text/plain"), ("content-length", "13")]
BODY = b"Hello, World!"


def server_connection(config):
    if config == "ours":
        from lilush_http.protocols.http2 import ServerConnection
        return ServerConnection({})
    return H2Connection(H2Configuration(client_side=False, header_encoding=None))


def run(requests, config, batch=10):
    """Server CPU seconds per GET, ``requests`` on one connection, ``batch`` in each read (as h2load -m 10)."""
    client = H2Connection(H2Configuration(client_side=True))
    server = server_connection(config)
    client.initiate_connection()
    client.increment_flow_control_window(2 ** 31 - 1 - 65535)  # one WINDOW_UPDATE for all: none per stream
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    spent = 0.0
    clock = time.process_time
    for _ in range(requests // batch):
        for _ in range(batch):
            client.send_headers(client.get_next_available_stream_id(), REQUEST, end_stream=True)
        frames = client.data_to_send()
        start = clock()
        for event in server.receive_data(frames):
            if type(event) is RequestReceived:
                server.send_headers(event.stream_id, RESPONSE)
                server.send_data(event.stream_id, BODY, end_stream=True)
        out = server.data_to_send()
        spent += clock() - start
        client.receive_data(out)
        if len(server.streams) > 256:
            server.open_inbound_streams if config == "default" else server.forget_closed()
            client.open_outbound_streams
    return spent / (batch * (requests // batch))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--config", default="ours", choices=("ours", "default"))
    parser.add_argument("--batch", type=int, default=10, help="requests in each read")
    args = parser.parse_args(argv)
    figures = sorted(run(args.requests, args.config, args.batch) * 1e6 for _ in range(args.repeat))
    print("h2 alone (%s config): %.1f us server CPU per request (median of %d x %d; runs %s)" % (
        args.config, figures[len(figures) // 2], args.repeat, args.requests, ", ".join("%.1f" % f for f in figures)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
