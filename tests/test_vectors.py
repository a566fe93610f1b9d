"""The request corpus in ``tests/vectors/`` (format in its README), each vector sent
over a socket to one live server, followed by a second request on the same connection."""

import codecs
import io
import os

import pytest

from conftest import LiveServer, read_response, read_to_end

VECTORS_DIR = os.path.join(os.path.dirname(__file__), "vectors")
AFTER = b"GET /after-the-vector HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
LIMITS = {"request_line_limit": 256, "max_headers": 10, "max_body_size": 64}


def unescape(text):
    """Bytes from text with Python escapes; non-ASCII text as UTF-8."""
    return codecs.escape_decode(text.encode("utf-8"))[0]


def load_vectors():
    """[(file:name, fields dict, raw bytes)] from every *.vectors file."""
    vectors = []
    for filename in sorted(f for f in os.listdir(VECTORS_DIR) if f.endswith(".vectors")):
        with open(os.path.join(VECTORS_DIR, filename), encoding="utf-8") as f:
            text = f.read()
        for block in text.split("\n=== ")[1:]:
            meta, _, raw = block.partition("\n>>>\n")
            name, *lines = meta.split("\n")
            fields = {"header": []}
            for line in lines:
                key, _, value = line.partition(": ")
                if key == "header":
                    fields["header"].append(value)
                else:
                    fields[key] = value
            raw_lines = raw.split("\n")
            while raw_lines and not raw_lines[-1]:
                raw_lines.pop()  # the blank line between vectors
            vectors.append(("%s:%s" % (filename[:-len(".vectors")], name.strip()), fields,
                            unescape("".join(raw_lines))))
    return vectors


VECTORS = load_vectors()


@pytest.fixture(scope="module")
def server():
    calls = []

    def handle(method, query, args, headers, body, ctx):
        calls.append((method, query, args, dict(headers), body))
        return "ok", 200, {"content-type": "text/plain"}
    live = LiveServer(handle, **LIMITS)
    yield live, calls
    live.stop()


def test_the_corpus_is_there():
    names = [name for name, _, _ in VECTORS]
    assert len(names) >= 60 and len(set(names)) == len(names)
    statuses = {int(fields["expect"]) for _, fields, _ in VECTORS}
    assert {200, 400, 413, 414, 431, 501} <= statuses


@pytest.mark.parametrize("name, fields, raw", VECTORS, ids=[v[0] for v in VECTORS])
def test_vector(server, name, fields, raw):
    live, calls = server
    del calls[:]
    sock = live.connect()
    try:
        sock.sendall(raw + AFTER)
    except (BrokenPipeError, ConnectionResetError):
        pass
    data, closed = read_to_end(sock, 10)
    sock.close()
    assert closed, "the server did not close the connection"
    answers = []
    reader = io.BytesIO(data)
    while reader.tell() < len(data):
        answers.append(read_response(reader))
    expect = int(fields["expect"])
    assert answers and answers[0][0] == expect, (fields.get("why"), answers[:1])
    if expect >= 400:
        assert len(answers) == 1 and answers[0][1]["connection"] == "close"
        assert calls == [], "a refused request reached the handler"
        return
    method, query, args, headers, body = calls[0]
    if "query" in fields:
        assert query == fields["query"]
    if "args" in fields:
        assert args == fields["args"]
    if "host" in fields:
        assert headers.get("host", "-") == fields["host"]
    for expected in fields["header"]:
        header_name, _, value = expected.partition(": ")
        assert headers[header_name].encode("utf-8", "surrogateescape") == unescape(value)
    if "body" in fields:
        assert body == (None if fields["body"] == "-" else unescape(fields["body"]))
    if fields.get("after", "served") == "served":
        assert [a[0] for a in answers] == [expect, 200]
        assert [c[1] for c in calls] == [query, "/after-the-vector"]
    else:
        assert len(answers) == 1 and answers[0][1]["connection"] == "close"
        assert len(calls) == 1
