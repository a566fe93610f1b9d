"""Content codings: Accept-Encoding negotiation, the compression policy, and
compressed responses seen by real clients (requests, curl, raw bytes)."""

import gzip
import json
import os
import random
import subprocess
import sys
import zlib

import brotli
import pytest
import requests

from lilush_http import compression
from lilush_http.compression import (Policy, StreamEncoder, compress, negotiate,
                                     parse_accept_encoding)
from lilush_http.config import defaults
from conftest import read_response

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS_DIR)
CURL = "/usr/bin/curl"


def make_page(size=100 * 1024):
    """A realistic, compressible HTML page of at least ``size`` bytes (a table of rows)."""
    rnd = random.Random(1234)
    words = ["alpha", "beta", "gamma", "delta", "lorem", "ipsum", "dolor", "sit", "amet",
             "server", "stream", "chunk", "header", "gevent"]
    parts = ["<!DOCTYPE html>\n<html><head><title>Report</title></head><body><table>\n"]
    length = len(parts[0])
    n = 0
    while length < size:
        n += 1
        row = ('<tr class="row"><td class="id">%d</td><td class="name">%s %s</td>'
               '<td class="price">%d.%02d</td></tr>\n'
               % (n, rnd.choice(words), rnd.choice(words), rnd.randrange(1000), rnd.randrange(100)))
        parts.append(row)
        length += len(row)
    parts.append("</table></body></html>\n")
    return "".join(parts).encode("utf-8")


PAGE = make_page()
PNG = bytes(random.Random(7).getrandbits(8) for _ in range(20000))  # incompressible, ineligible type
JSON = json.dumps([{"id": i, "name": "item %d" % i, "tags": ["a", "b", "c"]} for i in range(500)])
PRE_ENCODED = gzip.compress(PAGE)


def handle(method, query, args, headers, body, ctx):
    if query == "/page":
        return PAGE, 200, {"content-type": "text/html; charset=utf-8"}
    if query == "/small":
        return "<p>tiny</p>", 200, {"content-type": "text/html; charset=utf-8"}
    if query == "/default-type":  # no content-type from the handler: text/html is assumed
        return PAGE, 200, {}
    if query == "/png":
        return PNG, 200, {"content-type": "image/png"}
    if query == "/json":
        return JSON, 200, {"Content-Type": "Application/JSON"}
    if query == "/pre-encoded":
        return PRE_ENCODED, 200, {"content-type": "text/html", "content-encoding": "gzip"}
    if query == "/204":
        return None, 204, {"content-type": "text/html"}
    if query == "/304":
        return None, 304, {"content-type": "text/html", "etag": '"v1"'}
    return "not found", 404, {"content-type": "text/plain"}


# -- negotiation ------------------------------------------------------------------

NEGOTIATION = [
    # Accept-Encoding, chosen coding, identity acceptable
    (None, None, True),  # no header: no compression
    ("", None, True),
    ("*", "gzip", True),
    ("*;q=0", None, False),
    ("gzip;q=0", None, True),
    ("deflate", "deflate", True),
    ("gzip, deflate", "gzip", True),
    ("deflate, gzip", "gzip", True),  # equal weight: gzip preferred
    ("deflate;q=0.5, gzip;q=0.5", "gzip", True),
    ("deflate;q=1, gzip;q=0.5", "deflate", True),
    ("identity;q=0", None, False),
    ("gzip;q=0, identity;q=0", None, False),
    ("identity;q=0, *;q=0", None, False),
    ("*;q=0, identity", None, True),
    ("deflate;q=0.5, identity;q=0", "deflate", False),
    ("br", "br", True),
    ("br;q=1, gzip;q=0.8", "br", True),
    ("br;q=0.9, gzip;q=0.8, deflate;q=1", "deflate", True),
    ("gzip, br", "gzip", True),  # br only when ranked strictly higher
    ("br, gzip", "gzip", True),
    ("zstd, br;q=0.1", "br", True),
    ("GZIP", "gzip", True),
    ("Deflate", "deflate", True),
    ("x-gzip", "gzip", True),
    ("gzip;q=abc", None, True),  # malformed q: the entry is ignored
    ("gzip;q=abc, deflate", "deflate", True),
    ("gzip;q=2", None, True),
    ("gzip;q=-1", None, True),
    ("gzip;q=nan", None, True),
    ("gzip;q=0.001", "gzip", True),
    ("gzip;q=1.0", "gzip", True),
    ("gzip;level=9", "gzip", True),  # parameters other than q are ignored
    ("compress", None, True),
    ("zstd", None, True),
    (" gzip ; q=0.5 , deflate ; q=0.4", "gzip", True),
    ("gzip;q=0.5", "gzip", True),  # identity not named: acceptable, not ranked above gzip
    (",, gzip ,,", "gzip", True),
    ("identity", None, True),
    ("identity;q=1, gzip;q=0.5", None, True),  # the client ranks identity above every coding
    ("identity;q=0.5, gzip;q=0.5", "gzip", True),
    ("*;q=0.5, gzip;q=0", "deflate", True),
    ("*, gzip;q=0", "deflate", True),
    ("*;q=0.1, br;q=0.2", "br", True),
]


@pytest.mark.parametrize("accept_encoding,coding,identity_ok", NEGOTIATION)
def test_negotiation_table(accept_encoding, coding, identity_ok):
    assert compression.brotli is not None, "these rows expect the brotli package (a test extra)"
    assert negotiate(accept_encoding) == (coding, identity_ok)


def test_negotiation_table_is_large():
    assert len(NEGOTIATION) >= 25


def test_parse_accept_encoding():
    assert parse_accept_encoding(" gzip ; q=0.5 , deflate ; q=0.4") == {"gzip": 0.5, "deflate": 0.4}
    assert parse_accept_encoding("X-GZIP, br;q=0") == {"gzip": 1.0, "br": 0.0}
    assert parse_accept_encoding("gzip;q=abc, br;q=2, deflate;q=0.3") == {"deflate": 0.3}
    assert parse_accept_encoding("") == {}
    assert parse_accept_encoding("*;q=0.2, identity") == {"*": 0.2, "identity": 1.0}


# -- the policy ---------------------------------------------------------------------

def policy(**override):
    cfg = defaults()["compression"]
    cfg.update(override)
    return Policy(cfg)


def test_policy_type_matching_ignores_parameters_and_case():
    p = policy()
    assert p.choose("gzip", "text/html; charset=utf-8", 5000) == ("gzip", True)
    assert p.choose("gzip", "Text/HTML ;Charset=UTF-8", 5000) == ("gzip", True)
    assert p.choose("gzip", "application/json", 5000) == ("gzip", True)
    assert p.choose("gzip", "image/png", 5000) == (None, False)  # not listed: no Vary either
    assert p.choose("gzip", "text/htmlx", 5000) == (None, False)
    assert p.choose("gzip", "", 5000) == (None, False)


def test_policy_min_size():
    p = policy()
    assert p.min_size == 4096
    assert p.choose("gzip", "text/html", 4095) == (None, True)  # below: not compressed, but Vary
    assert p.choose("gzip", "text/html", 4096) == ("gzip", True)  # at: compressed
    assert p.choose("gzip", "text/html", None) == ("gzip", True)  # a stream of unknown size
    assert p.choose("gzip", "text/html", 0) == (None, True)
    assert policy(min_size=0).choose("gzip", "text/html", 0) == ("gzip", True)


def test_policy_no_header_or_no_acceptable_coding():
    p = policy()
    assert p.choose(None, "text/html", 10 ** 6) == (None, True)
    assert p.choose("compress", "text/html", 10 ** 6) == (None, True)
    assert p.choose("identity;q=1, gzip;q=0.5", "text/html", 10 ** 6) == (None, True)


def test_policy_identity_refused():
    p = policy()
    # identity;q=0 with an acceptable coding: compressed whatever the size
    assert p.choose("identity;q=0, gzip", "text/html", 10) == ("gzip", True)
    assert p.choose("*;q=0, deflate", "text/html", 1) == ("deflate", True)
    # ... and with none acceptable: sent as is
    assert p.choose("identity;q=0", "text/html", 10) == (None, True)
    assert p.choose("identity;q=0", "text/html", 10 ** 6) == (None, True)


def test_policy_disabled_and_types_and_level():
    assert policy(enabled=False).choose("gzip", "text/html", 10 ** 6) == (None, False)
    custom = policy(types=["Application/X-Custom"], level=1)
    assert custom.choose("gzip", "application/x-custom; v=2", 10 ** 6) == ("gzip", True)
    assert custom.choose("gzip", "text/html", 10 ** 6) == (None, False)
    assert custom.level == 1 and policy().level == 6


def test_compress_each_coding_and_level():
    assert gzip.decompress(compress(PAGE, "gzip", 6)) == PAGE
    assert zlib.decompress(compress(PAGE, "deflate", 6)) == PAGE  # zlib format, default wbits
    assert brotli.decompress(compress(PAGE, "br", 6)) == PAGE
    assert len(compress(PAGE, "gzip", 1)) > len(compress(PAGE, "gzip", 9))
    assert len(compress(PAGE, "deflate", 1)) > len(compress(PAGE, "deflate", 9))


@pytest.mark.parametrize("coding,decoder", [
    ("gzip", lambda: zlib.decompressobj(31)),
    ("deflate", lambda: zlib.decompressobj()),
])
def test_stream_encoder_flushes_each_chunk(coding, decoder):
    encoder = StreamEncoder(coding, 6)
    d = decoder()
    pieces = [b"first piece ", b"", b"second piece " * 50, b"third"]
    for piece in pieces:
        out = encoder.compress(piece)
        assert d.decompress(out) == piece  # each piece decodable on its own arrival
    assert encoder.compress(b"") == b""
    tail = encoder.finish()
    assert d.decompress(tail) == b""
    assert d.eof and d.unused_data == b""  # a complete stream, trailer (CRC, size) checked


def test_stream_encoder_br():
    encoder = StreamEncoder("br", 6)
    d = brotli.Decompressor()
    got = b""
    for piece in (b"one ", b"two " * 100, b"three"):
        got += d.process(encoder.compress(piece))
        assert got.endswith(piece)
    d.process(encoder.finish())
    assert d.is_finished()


# -- live: round trips ------------------------------------------------------------

@pytest.fixture
def live(live_server):
    return live_server(handle)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
def test_requests_decodes(live, coding):
    response = requests.get(live.url + "/page", headers={"Accept-Encoding": coding})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == coding
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.content == PAGE
    assert int(response.headers["content-length"]) < len(PAGE) / 5


DECODERS = {"gzip": gzip.decompress, "deflate": zlib.decompress, "br": brotli.decompress}


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
@pytest.mark.parametrize("path", ["/page", "/json", "/default-type"])
def test_raw_bytes_decompress_and_content_length(live, coding, path):
    response = requests.get(live.url + path, headers={"Accept-Encoding": coding}, stream=True)
    raw = response.raw.read(decode_content=False)
    assert response.headers["content-encoding"] == coding
    assert "transfer-encoding" not in response.headers
    assert int(response.headers["content-length"]) == len(raw)  # the compressed size
    plain = DECODERS[coding](raw)
    assert plain == (JSON.encode() if path == "/json" else PAGE)
    if coding == "gzip":
        assert raw[:2] == b"\x1f\x8b"
    if coding == "deflate":  # RFC 1950 zlib header: CM 8, and the check bits
        assert raw[0] & 0x0F == 8 and (raw[0] * 256 + raw[1]) % 31 == 0


def test_curl_compressed_default(live, tmp_path):
    body = tmp_path / "body"
    out = subprocess.run([CURL, "-s", "--compressed", "-D", "-", "-o", str(body), live.url + "/page"],
                         capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr
    head = out.stdout.decode("latin-1").lower()
    assert "content-encoding: gzip" in head  # curl offers "deflate, gzip, br, zstd": gzip wins
    assert "vary: accept-encoding" in head
    assert body.read_bytes() == PAGE


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
def test_curl_decodes_each_coding(live, tmp_path, coding):
    body = tmp_path / "body"
    out = subprocess.run([CURL, "-s", "--compressed", "-H", "Accept-Encoding: " + coding, "-D", "-",
                          "-o", str(body), live.url + "/page"], capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert ("content-encoding: %s" % coding) in out.stdout.decode("latin-1").lower()
    assert body.read_bytes() == PAGE


def raw_get(live, path, accept_encoding=None, method="GET", version="HTTP/1.1"):
    """(status, headers, body) of one request on a raw socket (exact bytes, no decoding)."""
    sock = live.connect()
    try:
        lines = "%s %s %s\r\nHost: t\r\n" % (method, path, version)
        if accept_encoding is not None:
            lines += "Accept-Encoding: %s\r\n" % accept_encoding
        sock.sendall((lines + "Connection: close\r\n\r\n").encode("latin-1"))
        f = sock.makefile("rb")
        status, headers, body = read_response(f, head_only=method == "HEAD")
        rest = f.read()
        f.close()
        return status, headers, body, rest
    finally:
        sock.close()


def test_vary_on_eligible_types_even_when_not_compressed(live):
    # small body, gzip accepted: not compressed, still Vary
    status, headers, body, _ = raw_get(live, "/small", "gzip")
    assert status == 200 and body == b"<p>tiny</p>"
    assert "content-encoding" not in headers
    assert headers["vary"] == "Accept-Encoding"
    # large body, no Accept-Encoding: not compressed, still Vary
    status, headers, body, _ = raw_get(live, "/page")
    assert body == PAGE and "content-encoding" not in headers
    assert headers["vary"] == "Accept-Encoding"
    assert int(headers["content-length"]) == len(PAGE)
    # an eligible type the client ranks below identity
    status, headers, body, _ = raw_get(live, "/page", "identity;q=1, gzip;q=0.5")
    assert body == PAGE and "content-encoding" not in headers and headers["vary"] == "Accept-Encoding"


def test_no_vary_on_ineligible_types(live):
    status, headers, body, _ = raw_get(live, "/png", "gzip, deflate, br")
    assert status == 200 and body == PNG
    assert "content-encoding" not in headers and "vary" not in headers
    assert int(headers["content-length"]) == len(PNG)


def test_disabled_compression_no_vary(live_server):
    live = live_server(handle, compression={"enabled": False})
    status, headers, body, _ = raw_get(live, "/page", "gzip")
    assert body == PAGE and "content-encoding" not in headers and "vary" not in headers


def test_custom_types_and_min_size(live_server):
    live = live_server(handle, compression={"types": ["image/png"], "min_size": 100})
    status, headers, body, _ = raw_get(live, "/png", "gzip")
    assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == PNG
    status, headers, body, _ = raw_get(live, "/page", "gzip")
    assert "content-encoding" not in headers and "vary" not in headers and body == PAGE
    live_small = live_server(handle, compression={"min_size": 5})
    status, headers, body, _ = raw_get(live_small, "/small", "gzip")
    assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == b"<p>tiny</p>"


def test_identity_refused_small_body_is_compressed(live):
    status, headers, body, _ = raw_get(live, "/small", "identity;q=0, deflate")
    assert headers["content-encoding"] == "deflate"
    assert zlib.decompress(body) == b"<p>tiny</p>"
    assert int(headers["content-length"]) == len(body)


def test_identity_refused_nothing_acceptable_is_sent_as_is(live):
    status, headers, body, _ = raw_get(live, "/page", "identity;q=0, compress")
    assert status == 200 and body == PAGE and "content-encoding" not in headers


def test_x_gzip_alias_gets_gzip(live):
    status, headers, body, _ = raw_get(live, "/page", "x-gzip")
    assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == PAGE


def test_handler_content_encoding_left_alone(live):
    status, headers, body, _ = raw_get(live, "/pre-encoded", "gzip, deflate, br")
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert body == PRE_ENCODED  # not compressed a second time
    assert gzip.decompress(body) == PAGE
    assert int(headers["content-length"]) == len(PRE_ENCODED)
    assert "vary" not in headers
    response = requests.get(live.url + "/pre-encoded", headers={"Accept-Encoding": "gzip"})
    assert response.content == PAGE


@pytest.mark.parametrize("path,status", [("/204", 204), ("/304", 304)])
def test_no_body_statuses_not_compressed(live, path, status):
    sock = live.connect()
    f = sock.makefile("rb")
    sock.sendall(("GET %s HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n" % path).encode())
    got, headers, body = read_response(f)
    assert got == status
    assert "content-encoding" not in headers
    # A 304 carries the Vary its 200 would (RFC 9110 section 15.4.5); a 204 has no representation.
    assert headers.get("vary") == ("Accept-Encoding" if status == 304 else None)
    assert "transfer-encoding" not in headers
    # nothing stray after the head: the next response on the connection parses cleanly
    sock.sendall(b"GET /small HTTP/1.1\r\nHost: t\r\n\r\n")
    got, headers, body = read_response(f)
    assert got == 200 and body == b"<p>tiny</p>"
    sock.close()


def without_date(headers):
    return {k: v for k, v in headers.items() if k != "date"}


@pytest.mark.parametrize("accept_encoding", [None, "gzip", "deflate", "br", "identity;q=0, gzip"])
@pytest.mark.parametrize("path", ["/page", "/small", "/png", "/json", "/pre-encoded", "/204"])
def test_head_has_the_headers_of_get(live, path, accept_encoding):
    sock = live.connect()
    f = sock.makefile("rb")
    ae = "" if accept_encoding is None else "Accept-Encoding: %s\r\n" % accept_encoding
    sock.sendall(("HEAD %s HTTP/1.1\r\nHost: t\r\n%s\r\n" % (path, ae)).encode())
    status_head, head_headers, _ = read_response(f, head_only=True)
    sock.sendall(("GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n" % (path, ae)).encode())
    status_get, get_headers, body = read_response(f)
    assert status_head == status_get
    assert without_date(head_headers) == without_date(get_headers)
    if "content-length" in get_headers:
        assert int(get_headers["content-length"]) == len(body)
    sock.close()


def test_level_changes_output_size(live_server):
    sizes = {}
    for level in (1, 9):
        live = live_server(handle, compression={"level": level})
        for coding in ("gzip", "deflate"):
            status, headers, body, _ = raw_get(live, "/page", coding)
            assert headers["content-encoding"] == coding
            assert DECODERS[coding](body) == PAGE
            sizes[level, coding] = len(body)
    assert sizes[1, "gzip"] > sizes[9, "gzip"]
    assert sizes[1, "deflate"] > sizes[9, "deflate"]
    # the server used exactly the configured level
    assert sizes[1, "gzip"] == len(compress(PAGE, "gzip", 1))
    assert sizes[9, "gzip"] == len(compress(PAGE, "gzip", 9))


def test_default_level_is_6(live):
    status, headers, body, _ = raw_get(live, "/page", "deflate")
    assert body == compress(PAGE, "deflate", 6) and zlib.decompress(body) == PAGE


@pytest.mark.parametrize("fast", [True, False])
def test_isal_when_installed_else_zlib(monkeypatch, fast):
    """gzip and deflate come from ISA-L (the speed extra) when it is there, else from zlib;
    either way standard streams at the configured level."""
    if fast:
        isal_zlib = pytest.importorskip("isal.isal_zlib")
        assert compression.isal_zlib is isal_zlib
        expected = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
    else:
        monkeypatch.setattr(compression, "isal_zlib", None)
        expected = zlib.compressobj(6, zlib.DEFLATED, 31)
    assert compress(PAGE, "gzip", 6) == expected.compress(PAGE) + expected.flush()
    assert gzip.decompress(compress(PAGE, "gzip", 6)) == PAGE
    assert zlib.decompress(compress(PAGE, "deflate", 6)) == PAGE
    assert len(compress(PAGE, "gzip", 0)) > len(PAGE)  # level 0: stored
    assert len(compress(PAGE, "gzip", 1)) > len(compress(PAGE, "gzip", 9))
    encoder, d = StreamEncoder("gzip", 6), zlib.decompressobj(31)
    for piece in (b"first ", b"second " * 100):
        assert d.decompress(encoder.compress(piece)) == piece
    d.decompress(encoder.finish())
    assert d.eof


def test_sizes_of_a_100k_page(live, record_property):
    sizes = {}
    for name, ae in (("raw", None), ("gzip", "gzip"), ("deflate", "deflate"), ("br", "br")):
        status, headers, body, _ = raw_get(live, "/page", ae)
        assert status == 200
        assert headers.get("content-encoding") == (None if name == "raw" else name)
        assert int(headers["content-length"]) == len(body)
        sizes[name] = len(body)
        record_property("size_" + name, len(body))
    line = "SIZES raw=%(raw)d gzip=%(gzip)d deflate=%(deflate)d br=%(br)d" % sizes
    print("\n" + line)
    assert sizes["raw"] == len(PAGE) >= 100 * 1024
    assert sizes["gzip"] < sizes["raw"] / 5
    assert sizes["deflate"] < sizes["raw"] / 5
    assert sizes["br"] < sizes["raw"] / 5


BROTLI_BLOCKED = r"""
import json, sys
sys.modules["brotli"] = None  # import brotli now raises ImportError
sys.path.insert(0, sys.argv[1])
import requests
from lilush_http import compression
from lilush_http.compression import negotiate
from conftest import LiveServer

out = {"brotli": compression.brotli is None, "preference": list(compression.PREFERENCE)}
out["negotiated"] = {ae: negotiate(ae)[0] for ae in
                     ["br", "br;q=1, gzip;q=0.5", "*", "br, deflate;q=0.1", "gzip, deflate, br"]}
page = b"<p>" + b"compressible text " * 1000 + b"</p>"
live = LiveServer(lambda *a: (page, 200, {"content-type": "text/html"}))
try:
    served = {}
    for ae in ["br", "br;q=1, gzip;q=0.5", "br, deflate;q=0.1", "*"]:
        r = requests.get(live.url + "/", headers={"Accept-Encoding": ae})
        served[ae] = [r.status_code, r.headers.get("content-encoding"), r.content == page]
    out["served"] = served
finally:
    live.stop()
print(json.dumps(out))
"""


def test_without_brotli_br_is_never_chosen():
    out = subprocess.run([sys.executable, "-c", BROTLI_BLOCKED, TESTS_DIR], capture_output=True,
                         timeout=30, cwd=ROOT)
    assert out.returncode == 0, out.stderr.decode()
    assert b"Traceback" not in out.stderr and b"ERROR" not in out.stderr
    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert result["brotli"] is True
    assert result["preference"] == ["gzip", "deflate"]
    assert result["negotiated"] == {"br": None, "br;q=1, gzip;q=0.5": "gzip", "*": "gzip",
                                    "br, deflate;q=0.1": "deflate", "gzip, deflate, br": "gzip"}
    assert result["served"] == {"br": [200, None, True], "br;q=1, gzip;q=0.5": [200, "gzip", True],
                                "br, deflate;q=0.1": [200, "deflate", True], "*": [200, "gzip", True]}


def test_compressed_bodies_are_cached_by_content():
    from lilush_http.config import DEFAULTS
    policy = Policy(dict(DEFAULTS["compression"], cache_size=200_000))
    page = b"<p>cached page</p>" * 5000  # 90 KB
    assert gzip.decompress(policy.compress(page, "gzip")) == page  # first sight: not cached
    first = policy.compress(page, "gzip")
    assert gzip.decompress(first) == page
    assert policy.compress(bytes(page), "gzip") is first  # equal bytes: encoded once
    policy.compress(page, "deflate")
    assert zlib.decompress(policy.compress(page, "deflate")) == page  # per coding
    other = b"<p>another page</p>" * 5000
    policy.compress(other, "gzip")
    policy.compress(other, "gzip")  # over 200 KB in all: the least recent entry goes
    assert policy.compress(page, "gzip") is not first
    assert gzip.decompress(policy.compress(page, "gzip")) == page


def test_compression_cache_can_be_disabled():
    from lilush_http.config import DEFAULTS
    policy = Policy(dict(DEFAULTS["compression"], cache_size=0))
    page = b"x" * 50000
    assert policy.compress(page, "gzip") is not policy.compress(page, "gzip")


def test_bodies_seen_once_are_not_cached():
    """A page made anew for every request is compressed each time, never stored;
    a body that comes back is."""
    from lilush_http.config import DEFAULTS
    policy = Policy(DEFAULTS["compression"])
    for serial in range(50):
        body = b"<!-- %d -->" % serial + PAGE
        assert gzip.decompress(policy.compress(body, "gzip")) == body
    assert policy._cached_bytes == 0
    same_glimpse = PAGE[:50000] + b"changed in the middle, unsampled" + PAGE[50032:]
    policy.compress(PAGE, "gzip")
    policy.compress(same_glimpse, "gzip")  # looks like PAGE: cached, and still correct
    assert gzip.decompress(policy.compress(PAGE, "gzip")) == PAGE
    assert policy._cached_bytes > 0
