"""WebSocket sessions (lilush_http.websocket) against clients nobody here wrote:
wsproto, websocket-client, the websockets library, Node's ws, Chromium."""

import json
import logging
import os
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest
import requests
import websocket as websocket_client
from websockets.sync.client import connect as websockets_connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request, TextMessage

from conftest import HeadlessChromium, need_program, read_response, read_to_end
from lilush_http import websocket

ECHO_MODULE = '''
from lilush_http import websocket

def handle(method, query, args, headers, body, ctx):
    if query == "/ws":
        ws, err = websocket.upgrade(method, headers, ctx, protocols=["chat", "superchat"])
        if ws is None:
            return None, None, None
        for message in ws:
            if message == "raise":
                raise RuntimeError("handler fails mid-session")
            if message == "close-socket":
                ctx["client"].close()
                return None, None, None
            ws.send(message)
        return None, None, None
    return "plain", 200, {"content-type": "text/plain"}
'''
namespace = {}
exec(ECHO_MODULE, namespace)
echo = namespace["handle"]


def ws_url(live, path="/ws"):
    return "ws://%s:%d%s" % (live.host, live.port, path)


def access_entries(caplog):
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "lilush_http.access"]


def wait_until(predicate, within=5.0):
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in %s s" % within
        time.sleep(0.02)


# -- a raw client on wsproto, for frame-level tests --------------------------

class RawClient:
    """A socket that did the opening handshake with wsproto; frames are then sent
    as raw bytes (malformed ones too) and the server's answer read with wsproto."""

    def __init__(self, live, path="/ws", extensions=None, timeout=5):
        self.sock = live.connect(timeout)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host="x", target=path, extensions=extensions or [])))
        self.events = []
        while not any(isinstance(e, AcceptConnection) for e in self.events):
            self.feed(self.sock.recv(65536))
        self.accepted = self.events.pop(0)

    def feed(self, data):
        self.ws.receive_data(data or None)
        self.events.extend(self.ws.events())

    def send(self, event):
        self.sock.sendall(self.ws.send(event))

    def until(self, kind, within=5.0):
        """The first event of ``kind`` (earlier ones are dropped); None when the
        server closed or ``within`` passed first."""
        deadline = time.monotonic() + within
        while True:
            for i, event in enumerate(self.events):
                if isinstance(event, kind):
                    del self.events[:i + 1]
                    return event
            if self.ws.state.name == "CLOSED" and not self.events:
                return None
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return None
            except ConnectionResetError:
                data = b""
            if time.monotonic() > deadline:
                return None
            self.feed(data)

    def close_code(self, within=5.0):
        """The code of the server's close frame; answered, and the socket closed, as a browser does."""
        event = self.until(CloseConnection, within)
        if event is None:
            return None
        try:
            self.send(event.response())
        except Exception:
            pass
        self.sock.close()
        return int(event.code)


def frame(opcode, payload, fin=True, masked=True, rsv=0):
    """One client frame, built by hand (so it may be wrong on purpose)."""
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


# -- the opening handshake ---------------------------------------------------------

def test_echo_with_websocket_client_and_access_log(live_server, caplog):
    caplog.set_level(logging.DEBUG, logger="lilush_http")
    live = live_server(echo)
    client = websocket_client.create_connection(ws_url(live), subprotocols=["superchat", "other"])
    assert client.getsubprotocol() == "superchat"
    client.send("héllo")
    assert client.recv() == "héllo"
    big = os.urandom(300 * 1024)
    client.send_binary(big)
    assert client.recv() == big
    client.close()
    wait_until(lambda: any(e["status"] == 101 for e in access_entries(caplog)))
    entry = next(e for e in access_entries(caplog) if e["status"] == 101)
    assert entry["target"] == "/ws" and entry["method"] == "GET"
    assert entry["size"] > 300 * 1024 and entry["duration"] > 0


def test_not_an_upgrade_is_refused_and_the_connection_goes_on(live_server):
    live = live_server(echo)
    assert requests.get(live.url + "/ws").status_code == 426
    response = requests.get(live.url + "/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                                       "Sec-WebSocket-Version": "8", "Sec-WebSocket-Key": "x"})
    assert response.status_code == 426 and response.headers["Sec-WebSocket-Version"] == "13"
    sock = live.connect()
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: not-base64-16\r\n\r\n"
                 b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reader = sock.makefile("rb")
    assert read_response(reader)[0] == 400
    assert read_response(reader)[2] == b"plain"  # the keep-alive connection still serves


def test_session_limit_answers_503(live_server):
    live = live_server(echo, websocket={"session_limit": 1})
    first = websocket_client.create_connection(ws_url(live))
    with pytest.raises(websocket_client.WebSocketBadStatusException) as refused:
        websocket_client.create_connection(ws_url(live))
    assert refused.value.status_code == 503
    first.close()
    wait_until(lambda: len(live.srv._websockets) == 0)
    second = websocket_client.create_connection(ws_url(live))
    second.send("again")
    assert second.recv() == "again"
    second.close()


@pytest.mark.parametrize("bad, key", [
    ({"max_message_size": 0}, "websocket.max_message_size"),
    ({"session_limit": 1.5}, "websocket.session_limit"),
    ({"ping_interval": 0}, "websocket.ping_interval"),
    ({"pong_timeout": "10"}, "websocket.pong_timeout"),
    ({"send_timeout": -1}, "websocket.send_timeout"),
    ({"close_timeout": None}, "websocket.close_timeout"),
    ({"compression": "yes"}, "websocket.compression"),
])
def test_websocket_config_is_checked(bad, key):
    from lilush_http import server
    srv, err = server.new({"websocket": bad})
    assert srv is None and err.startswith(key + ":"), err
    srv, err = server.new({"websocket": "on"})
    assert srv is None and err.startswith("websocket:"), err
    srv, err = server.new({"websocket": {"max_message_size": 10}})
    assert srv.cfg["websocket"]["max_message_size"] == 10 and srv.cfg["websocket"]["ping_interval"] == 20


def test_wss_over_tls(live_server, tmp_path):
    import ssl
    import trustme
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    live = live_server(echo, ssl={"default": {"cert": str(tmp_path / "c.pem"), "key": str(tmp_path / "k.pem")}})
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with websockets_connect("wss://127.0.0.1:%d/ws" % live.port, ssl=context, max_size=None) as client:
        big = os.urandom(900 * 1024)  # many TLS records per message
        for message in ("over tls", big, "after"):
            client.send(message)
            assert client.recv() == message
    assert client.close_code == 1000


# -- messages, limits, protocol errors --------------------------------------------

def test_websockets_library_with_permessage_deflate(live_server):
    live = live_server(echo)
    with websockets_connect(ws_url(live), subprotocols=["chat"], max_size=None) as client:
        assert client.subprotocol == "chat"
        assert "permessage-deflate" in client.response.headers["Sec-WebSocket-Extensions"]
        text = "compressible " * 50000
        client.send(text)
        assert client.recv() == text
        for i in range(50):
            client.send(b"%d" % i)
            assert client.recv() == b"%d" % i
        client.ping(b"are you there")
    assert client.close_code == 1000


def test_fragments_reassembled_with_control_frames_between(live_server):
    live = live_server(echo)
    raw = RawClient(live)
    raw.sock.sendall(frame(0x1, "frag".encode(), fin=False) + frame(0x9, b"ping!")
                     + frame(0x0, "ment".encode(), fin=False) + frame(0xA, b"unasked pong")
                     + frame(0x0, "ed ✓".encode()))
    from wsproto.events import Pong
    assert raw.until(Pong).payload == b"ping!"
    assert raw.until(TextMessage).data == "fragmented ✓"
    raw.send(CloseConnection(code=1000))
    assert raw.close_code() == 1000


@pytest.mark.parametrize("data, code", [
    (frame(0x1, b"\xff\xfe"), 1007),                     # invalid UTF-8
    (frame(0x1, "ok".encode(), masked=False), 1002),     # unmasked client frame
    (frame(0x3, b"x"), 1002),                             # reserved opcode
    (frame(0x1, b"x", rsv=4), 1002),                      # RSV1 without an extension
    (frame(0x9, b"p" * 126), 1002),                       # control frame over 125 bytes
    (frame(0x9, b"p", fin=False), 1002),                  # fragmented control frame
    (frame(0x0, b"x"), 1002),                             # continuation with nothing to continue
    (frame(0x2, b"x" * (64 * 1024 + 1)), 1009),          # over max_message_size
    (frame(0x2, b"x" * 40000, fin=False) + frame(0x0, b"x" * 40000), 1009),  # fragments over it
])
def test_protocol_errors_and_limits_close_with_the_right_code(live_server, data, code):
    live = live_server(echo, websocket={"max_message_size": 64 * 1024})
    raw = RawClient(live)
    raw.sock.sendall(data)
    assert raw.close_code() == code
    wait_until(lambda: len(live.srv._websockets) == 0)
    assert requests.get(live.url).text == "plain"


def test_deflate_bomb_is_stopped_at_the_limit(live_server):
    from wsproto.extensions import PerMessageDeflate
    live = live_server(echo, websocket={"max_message_size": 64 * 1024})
    raw = RawClient(live, extensions=[PerMessageDeflate()])
    assert raw.accepted.extensions
    raw.send(BytesMessage(data=b"\0" * (20 * 1024 * 1024)))  # ~20 KB on the wire
    assert raw.close_code() == 1009


# -- sessions and the server ----------------------------------------------------------

def test_idle_websockets_do_not_keep_plain_http_out(live_server):
    live = live_server(echo, connection_limit=2)
    clients = [websocket_client.create_connection(ws_url(live)) for _ in range(5)]
    for _ in range(3):
        assert requests.get(live.url, timeout=5).text == "plain"
    for client in clients:
        client.send("still here")
        assert client.recv() == "still here"
        client.close()


def test_handler_closing_the_socket_frees_its_slot(live_server):
    live = live_server(echo, connection_limit=1)
    client = websocket_client.create_connection(ws_url(live))
    client.send("close-socket")
    assert read_to_end(client.sock, 5)[1]  # the server closed the connection
    wait_until(lambda: len(live.srv._websockets) == 0, within=2)  # the session ended at once
    assert requests.get(live.url, timeout=5).text == "plain"
    started = time.monotonic()
    live.stop(timeout=10)
    assert time.monotonic() - started < 5  # no greenlet stuck in read_head


def test_plain_handler_closing_ctx_client_does_not_leak_the_slot(live_server):
    def handle(method, query, args, headers, body, ctx):
        if query == "/close":
            ctx["client"].sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye")
            ctx["client"].close()
            return None, None, None
        return "plain", 200, {}
    live = live_server(handle, connection_limit=1)
    for _ in range(3):  # with the slot leaked, the second would wait forever
        assert requests.get(live.url + "/close", timeout=5).text == "bye"
    assert requests.get(live.url, timeout=5).text == "plain"
    wait_until(lambda: not live.srv._connections)
    started = time.monotonic()
    live.stop(timeout=10)
    assert time.monotonic() - started < 5


def test_handler_raising_mid_session_closes_with_1011(live_server, caplog):
    caplog.set_level(logging.DEBUG, logger="lilush_http")
    live = live_server(echo, connection_limit=1)
    raw = RawClient(live)
    raw.send(TextMessage(data="raise"))
    assert raw.close_code() == 1011
    assert "handler fails mid-session" in caplog.text
    wait_until(lambda: len(live.srv._websockets) == 0 and not live.srv._connections)
    assert requests.get(live.url, timeout=5).text == "plain"


def test_stop_closes_sessions_with_1001(live_server):
    live = live_server(echo)
    raws = [RawClient(live) for _ in range(3)]
    started = time.monotonic()
    threading.Thread(target=live.stop, args=(10,), daemon=True).start()
    assert [raw.close_code() for raw in raws] == [1001] * 3
    wait_until(lambda: not live.thread.is_alive())
    assert time.monotonic() - started < 5


def test_silent_peer_is_pinged_then_dropped(live_server):
    live = live_server(echo, websocket={"ping_interval": 0.3, "pong_timeout": 0.3})
    from wsproto.events import Ping
    raw = RawClient(live)  # wsproto queues pongs but this client never sends them
    assert raw.until(Ping, 3) is not None
    assert raw.close_code(5) == 1011
    with websockets_connect(ws_url(live)) as answering:  # its background thread answers pings
        time.sleep(1.5)
        answering.send("alive")
        assert answering.recv() == "alive"


def test_peer_that_stops_reading_is_cut_at_the_send_deadline(live_server):
    sent = []

    def flood(method, query, args, headers, body, ctx):
        ws, err = websocket.upgrade(method, headers, ctx)
        while ws.send(b"x" * 65536)[0]:
            sent.append(1)
        sent.append(ws.close_code)
        return None, None, None
    live = live_server(flood, websocket={"send_timeout": 0.5})
    raw = RawClient(live)
    wait_until(lambda: sent and sent[-1] == 1006, within=10)
    assert len(sent) > 2
    raw.sock.close()


# -- Node's ws and Chromium ------------------------------------------------------------

NODE_CLIENT = r'''
const WebSocket = require("ws");
const ws = new WebSocket(process.argv[2], ["chat"], {perMessageDeflate: true});
const sent = [];
let received = 0, mismatches = 0;
ws.on("open", () => {
  for (let i = 0; i < 100; i++) {
    const m = i % 10 === 9 ? Buffer.alloc(i === 99 ? 1000000 : 5000, i) : "message " + i + " ✓";
    sent.push(m);
    ws.send(m);
  }
});
ws.on("message", (data, isBinary) => {
  const expected = sent[received++];
  const same = isBinary ? Buffer.isBuffer(expected) && expected.equals(data)
                        : typeof expected === "string" && data.toString() === expected;
  if (!same) mismatches++;
  if (received === 100) ws.close(1000, "done");
});
ws.on("close", (code) => {
  console.log(JSON.stringify({received, mismatches, code, protocol: ws.protocol,
                              extensions: ws.extensions}));
});
ws.on("error", (e) => { console.log(JSON.stringify({error: String(e)})); });
'''


@pytest.fixture(scope="session")
def node_ws(tmp_path_factory):
    """A directory with Node's ws package installed from npm."""
    need_program("node")
    npm = need_program("npm")
    root = tmp_path_factory.mktemp("node_ws")
    out = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(root), "ws@8"],
                         capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stderr
    (root / "client.js").write_text(NODE_CLIENT)
    return root


def test_node_ws_client(live_server, node_ws):
    live = live_server(echo)
    out = subprocess.run(["node", str(node_ws / "client.js"), ws_url(live)], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, NODE_PATH=str(node_ws / "node_modules")))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == {"received": 100, "mismatches": 0, "code": 1000, "protocol": "chat",
                      "extensions": "permessage-deflate"}


CHROMIUM_PAGE = '''<!doctype html><html><body><script>
const ws = new WebSocket("ws://" + location.host + "/ws");
ws.binaryType = "arraybuffer";
const sent = [];
let received = 0, mismatches = 0;
function report(extra) {
  fetch("/result", {method: "POST", body: JSON.stringify(Object.assign({received, mismatches}, extra))});
}
ws.onopen = () => {
  for (let i = 0; i < 100; i++) {
    let m = "message " + i + " \u2713";
    if (i === 50) { m = new Uint8Array(1000000); for (let j = 0; j < m.length; j++) m[j] = j % 251; }
    sent.push(m);
    ws.send(m);
  }
};
ws.onmessage = (event) => {
  const expected = sent[received++];
  if (typeof expected === "string") {
    if (event.data !== expected) mismatches++;
  } else {
    const got = new Uint8Array(event.data);
    if (got.length !== expected.length || got.some((b, j) => b !== expected[j])) mismatches++;
  }
  if (received === 100) ws.close(1000);
};
ws.onclose = (event) => report({code: event.code, extensions: ws.extensions});
ws.onerror = () => report({error: true});
</script></body></html>'''


def test_chromium_echoes_100_messages_with_a_1mb_one(live_server, tmp_path):
    results = []

    def handle(method, query, args, headers, body, ctx):
        if query == "/":
            return CHROMIUM_PAGE, 200, {"content-type": "text/html"}
        if query == "/result":
            results.append(json.loads(body))
            return "thanks", 200, {}
        return echo(method, query, args, headers, body, ctx)
    live = live_server(handle)
    with HeadlessChromium(live.url + "/", tmp_path, "--disable-quic") as browser:
        wait_until(lambda: results or browser.poll() is not None, within=60)
    assert len(results) == 1 and results[0]["extensions"].startswith("permessage-deflate")
    assert {k: results[0][k] for k in ("received", "mismatches", "code")} == {
        "received": 100, "mismatches": 0, "code": 1000}


# -- Server-Sent Events: plain streaming ------------------------------------------------

def test_server_sent_events_with_heartbeats_and_a_client_that_leaves(live_server):
    import gevent
    state = {"sent": 0, "ended": False}

    def handle(method, query, args, headers, body, ctx):
        if query != "/events":
            return "plain", 200, {}

        def events():
            try:
                yield "retry: 1000\n\n"
                for i in range(1000):
                    yield "id: %d\nevent: tick\ndata: {\"n\": %d}\n\n" % (i, i)
                    state["sent"] += 1
                    gevent.sleep(0.05)
                    yield ": heartbeat\n\n"  # keeps proxies from timing the stream out
            finally:
                state["ended"] = True  # the server closes the generator when the client leaves
        return events(), 200, {"content-type": "text/event-stream", "cache-control": "no-cache"}
    live = live_server(handle)
    sock = live.connect()
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nAccept-Encoding: gzip\r\n\r\n")
    reader = sock.makefile("rb")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += reader.readline()
    assert b"content-type: text/event-stream" in head and b"Transfer-Encoding: chunked" in head
    assert b"Content-Encoding" not in head
    events, heartbeats = [], 0
    while len(events) < 5:
        line = reader.readline().strip()
        if line.startswith(b"data: "):
            events.append(json.loads(line[6:]))
        elif line == b": heartbeat":
            heartbeats += 1
    assert events == [{"n": i} for i in range(5)] and heartbeats >= 4
    reader.close()
    sock.close()  # the client leaves
    wait_until(lambda: state["ended"], within=10)
    sent = state["sent"]
    time.sleep(0.3)
    assert state["sent"] == sent < 1000  # nothing is produced for a client that left
    assert requests.get(live.url, timeout=5).text == "plain"


def test_sigterm_closes_sessions_with_1001(run, tmp_path):
    (tmp_path / "wsapp.py").write_text(ECHO_MODULE)
    proc = run(["wsapp:handle", "--port", "0"], tmp_path)
    clients = [websocket_client.create_connection("ws://127.0.0.1:%d/ws" % proc.port, timeout=10) for _ in range(3)]
    clients[0].send("before")
    assert clients[0].recv() == "before"
    stopper = threading.Thread(target=lambda: proc.proc.send_signal(signal.SIGTERM))
    started = time.monotonic()
    stopper.start()
    for client in clients:
        opcode, frame = client.recv_data_frame(control_frame=True)
        assert opcode == websocket_client.ABNF.OPCODE_CLOSE and struct.unpack("!H", frame.data[:2])[0] == 1001
        client.send_close()
    assert proc.proc.wait(10) == 0
    assert time.monotonic() - started < 4  # not the stop timeout: the sessions ended at once
