"""WebSocket under WSGI: Flask-SocketIO (gevent mode, environ["wsgi.websocket"])
with python-socketio's client, and Flask-Sock (simple-websocket), both served by
``lilush-http --wsgi`` (which monkeypatches, as a deployment does)."""

import textwrap
import threading

import pytest
import requests
import socketio
import websocket as websocket_client

CHAT_APP = '''
from flask import Flask
from flask_socketio import SocketIO, emit

app = Flask(__name__)
sio = SocketIO(app, async_mode="gevent")

@app.route("/")
def index():
    return "chat server"

@sio.on("join")
def join(name):
    emit("joined", name, broadcast=True)

@sio.on("say")
def say(data):
    emit("said", data, broadcast=True)
    return "delivered"
'''

SOCK_APP = '''
from flask import Flask
from flask_sock import Sock

app = Flask(__name__)
sock = Sock(app)

@app.route("/")
def index():
    return "sock server"

@sock.route("/echo")
def echo(ws):
    while True:
        message = ws.receive()
        if message == "bye":
            ws.close(reason=1000, message="bye")
            break
        ws.send(message[::-1] if isinstance(message, str) else message)
'''


def serve_app(run, tmp_path, source, module):
    (tmp_path / (module + ".py")).write_text(textwrap.dedent(source))
    return run(["--wsgi", module + ":app", "--port", "0"], tmp_path)


def test_flask_socketio_chat_over_the_websocket_transport(run, tmp_path):
    pytest.importorskip("geventwebsocket")  # engineio's gevent mode uses wsgi.websocket only then
    proc = serve_app(run, tmp_path, CHAT_APP, "chatapp")
    assert requests.get(proc.url, timeout=5).text == "chat server"
    received = {"alice": [], "bob": []}
    done = threading.Event()
    clients = {}
    for name in received:
        client = socketio.Client(reconnection=False)

        def on_said(data, name=name):
            received[name].append(data)
            if all(len(v) == 10 for v in received.values()):
                done.set()
        client.on("said", on_said)
        client.connect(proc.url, transports=["websocket"], wait_timeout=10)
        assert client.transport() == "websocket"
        clients[name] = client
    acks = [clients["alice"].call("say", "message %d" % i, timeout=10) for i in range(5)]
    acks += [clients["bob"].call("say", "reply %d" % i, timeout=10) for i in range(5)]
    assert acks == ["delivered"] * 10
    assert done.wait(10), received
    expected = ["message %d" % i for i in range(5)] + ["reply %d" % i for i in range(5)]
    assert received["alice"] == expected and received["bob"] == expected
    for client in clients.values():
        client.disconnect()
    assert requests.get(proc.url, timeout=5).text == "chat server"
    entries = proc.access_entries()
    assert any(e["status"] == 101 and e["target"].startswith("/socket.io/") for e in entries)


def test_flask_sock_echo(run, tmp_path):
    proc = serve_app(run, tmp_path, SOCK_APP, "sockapp")
    client = websocket_client.create_connection("ws://127.0.0.1:%d/echo" % proc.port, timeout=10)
    for word in ("hello", "lilush", "ünïcode"):
        client.send(word)
        assert client.recv() == word[::-1]
    client.send_binary(b"\x00\x01\x02")
    assert client.recv() == b"\x00\x01\x02"
    client.send("bye")
    opcode, frame = client.recv_data_frame(control_frame=True)
    assert opcode == websocket_client.ABNF.OPCODE_CLOSE and frame.data[:2] == b"\x03\xe8"  # 1000
    client.send_close()
    assert client.sock.recv(100) == b""  # then the server closes the TCP connection
    assert requests.get(proc.url, timeout=5).text == "sock server"  # the server goes on
    proc.wait_for(lambda line: '"status":101' in line and '"/echo"' in line)
