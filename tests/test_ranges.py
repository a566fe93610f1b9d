"""Big static files: byte ranges, validators, precompressed siblings, the file path
(sendfile, bounded reads under TLS), checked with curl, wget and requests; the
range and validator rules with plain values."""

import gzip
import os
import re
import subprocess
import time
from email.utils import formatdate

import brotli
import pytest
import requests
import trustme

from conftest import need_program, read_response
from lilush_http import static

SIZE = 300_000
DATA = os.urandom(SIZE)
TEXT = ("line %06d of a text file that compresses well\n" * 4000 % tuple(range(4000))).encode()


@pytest.fixture
def site(tmp_path, live_server):
    root = tmp_path / "root"
    root.mkdir()
    (root / "big.bin").write_bytes(DATA)
    (root / "page.txt").write_bytes(TEXT)
    (root / "app.js").write_bytes(TEXT)
    (root / "app.js.gz").write_bytes(gzip.compress(TEXT))
    (root / "app.js.br").write_bytes(brotli.compress(TEXT))
    (root / "empty.txt").write_bytes(b"")
    srv = live_server(static.make_handle(str(root), cache_control="public, max-age=60"))
    srv.root = root
    return srv


def get(srv, path, **headers):
    return requests.get(srv.url + path, headers=dict({"Accept-Encoding": "identity"}, **headers))


def curl(*args):
    out = subprocess.run([need_program("curl"), "-s", "-S", *args], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


# -- rules, with plain values ---------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("bytes=0-9", [(0, 10)]),
    ("bytes=10-", [(10, 1000)]),
    ("bytes=-10", [(990, 1000)]),
    ("bytes=-5000", [(0, 1000)]),
    ("bytes=990-5000", [(990, 1000)]),
    ("BYTES = 0-0", [(0, 1)]),
    ("bytes=0-9, 500-599", [(0, 10), (500, 600)]),
    ("bytes=500-599,0-9", [(500, 600), (0, 10)]),  # the order asked
    ("bytes=0-9,,", [(0, 10)]),  # empty list elements are allowed
    ("bytes=1000-", []),  # unsatisfiable
    ("bytes=-0", []),
    ("bytes=1000-2000,5000-", []),
    ("bytes=0-9,1000-", [(0, 10)]),  # the satisfiable one is kept
    ("items=0-9", None),  # another unit: ignored
    ("bytes=9-0", None),  # invalid: ignored
    ("bytes=abc", None),
    ("bytes=1-2-3", None),
    ("bytes=", None),
    ("bytes=-", None),
    ("bytes=\u00b9-2", None),  # a Unicode digit is not a digit here
    ("bytes=" + "9" * 40 + "-", None),
    ("bytes=0-99,50-149", None),  # overlapping: abuse
    ("bytes=0-0,2-2,4-4", None),  # tiny and close: abuse
    ("bytes=" + ",".join("%d-%d" % (i * 50, i * 50) for i in range(17)), None),  # too many
])
def test_parse_ranges(value, expected):
    assert static.parse_ranges(value, 1000) == expected


def test_parse_ranges_of_an_empty_file():
    assert static.parse_ranges("bytes=0-", 0) == []
    assert static.parse_ranges("bytes=-1", 0) == []


TAG = '"1-2-3"'
WHEN = 1_700_000_000
HTTP_WHEN = formatdate(WHEN, usegmt=True)


@pytest.mark.parametrize("method, headers, expected", [
    ("GET", {}, None),
    ("GET", {"if-none-match": TAG}, 304),
    ("GET", {"if-none-match": 'W/"1-2-3"'}, 304),  # weak comparison
    ("GET", {"if-none-match": '"x", "1-2-3"'}, 304),
    ("GET", {"if-none-match": "*"}, 304),
    ("GET", {"if-none-match": '"x"'}, None),
    ("HEAD", {"if-none-match": TAG}, 304),
    ("POST", {"if-none-match": TAG}, 412),
    # If-None-Match wins over If-Modified-Since (RFC 9110 section 13.2.2).
    ("GET", {"if-none-match": '"x"', "if-modified-since": HTTP_WHEN}, None),
    ("GET", {"if-modified-since": HTTP_WHEN}, 304),
    ("GET", {"if-modified-since": formatdate(WHEN - 1, usegmt=True)}, None),
    ("GET", {"if-modified-since": "garbage"}, None),
    ("POST", {"if-modified-since": HTTP_WHEN}, None),
    ("GET", {"if-match": TAG}, None),
    ("GET", {"if-match": '"x"'}, 412),
    ("GET", {"if-match": 'W/"1-2-3"'}, 412),  # strong comparison
    ("GET", {"if-match": "*"}, None),
    ("GET", {"if-unmodified-since": formatdate(WHEN - 1, usegmt=True)}, 412),
    ("GET", {"if-unmodified-since": HTTP_WHEN}, None),
    ("GET", {"if-match": TAG, "if-unmodified-since": formatdate(WHEN - 1, usegmt=True)}, None),
])
def test_precondition(method, headers, expected):
    assert static.precondition(method, headers, TAG, WHEN) == expected


@pytest.mark.parametrize("if_range, expected", [
    (TAG, [(0, 10)]),
    ('"other"', None),
    ('W/"1-2-3"', None),  # a weak tag never matches If-Range
    (HTTP_WHEN, [(0, 10)]),
    (formatdate(WHEN + 1, usegmt=True), None),  # only the exact date
    ("garbage", None),
])
def test_if_range(if_range, expected):
    headers = {"range": "bytes=0-9", "if-range": if_range}
    assert static.requested_ranges("GET", headers, 1000, TAG, WHEN) == expected
    assert static.requested_ranges("HEAD", {"range": "bytes=0-9"}, 1000, TAG, WHEN) is None


# -- ranges on the wire ---------------------------------------------------------------------


def test_whole_file_advertises_ranges_and_validators(site):
    r = get(site, "/big.bin")
    assert r.status_code == 200 and r.content == DATA
    assert r.headers["accept-ranges"] == "bytes"
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+"', r.headers["etag"])
    assert r.headers["cache-control"] == "public, max-age=60"
    assert int(r.headers["content-length"]) == SIZE


def test_curl_single_range(site):
    assert curl("-r", "0-9", site.url + "/big.bin") == DATA[:10]
    assert curl("-r", "-100", site.url + "/big.bin") == DATA[-100:]
    assert curl("-r", "1000-", site.url + "/big.bin") == DATA[1000:]
    r = get(site, "/big.bin", Range="bytes=100-199")
    assert r.status_code == 206 and r.content == DATA[100:200]
    assert r.headers["content-range"] == "bytes 100-199/%d" % SIZE
    assert r.headers["content-length"] == "100"


def parse_multipart(response):
    boundary = re.search(r"boundary=(\S+)", response.headers["content-type"]).group(1).encode()
    parts = []
    body = response.content
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")
    for chunk in body.split(b"\r\n--" + boundary)[1:-1]:
        head, _, data = chunk.partition(b"\r\n\r\n")
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n") if line)
        parts.append((fields[b"Content-Range"].decode(), fields[b"Content-Type"].decode(), data))
    return parts


def test_requests_multiple_ranges_byte_for_byte(site):
    r = get(site, "/big.bin", Range="bytes=0-99, 1000-1999, -500")
    assert r.status_code == 206
    assert r.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert int(r.headers["content-length"]) == len(r.content)
    assert parse_multipart(r) == [
        ("bytes 0-99/%d" % SIZE, "application/octet-stream", DATA[:100]),
        ("bytes 1000-1999/%d" % SIZE, "application/octet-stream", DATA[1000:2000]),
        ("bytes %d-%d/%d" % (SIZE - 500, SIZE - 1, SIZE), "application/octet-stream", DATA[-500:]),
    ]
    # curl asks for several ranges the same way.
    out = curl("-r", "0-9,100-109", site.url + "/big.bin")
    assert DATA[:10] in out and DATA[100:110] in out and b"multipart" not in out[:2]


@pytest.mark.parametrize("spec", [
    "bytes=0-99,50-149",
    "bytes=0-0,2-2,4-4,6-6",
    "bytes=" + ",".join("%d-%d" % (i * 1000, i * 1000 + 10) for i in range(40)),
    "bytes=0-,0-,0-",
])
def test_abusive_range_sets_get_the_whole_file(site, spec):
    r = get(site, "/big.bin", Range=spec)
    assert r.status_code == 200 and r.content == DATA


def test_unsatisfiable_range_is_416(site):
    r = get(site, "/big.bin", Range="bytes=%d-" % SIZE)
    assert r.status_code == 416
    assert r.headers["content-range"] == "bytes */%d" % SIZE
    r = get(site, "/empty.txt", Range="bytes=0-")
    assert r.status_code == 416 and r.headers["content-range"] == "bytes */0"
    # A malformed Range is ignored.
    assert get(site, "/big.bin", Range="bytes=oops").status_code == 200


def test_if_range_with_etag_and_date(site):
    first = get(site, "/big.bin")
    tag, modified = first.headers["etag"], first.headers["last-modified"]
    r = get(site, "/big.bin", Range="bytes=0-9", **{"If-Range": tag})
    assert r.status_code == 206 and r.content == DATA[:10]
    r = get(site, "/big.bin", Range="bytes=0-9", **{"If-Range": modified})
    assert r.status_code == 206 and r.content == DATA[:10]
    r = get(site, "/big.bin", Range="bytes=0-9", **{"If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == DATA
    r = get(site, "/big.bin", Range="bytes=0-9", **{"If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert r.status_code == 200 and r.content == DATA


def test_curl_resumes_a_truncated_download(site, tmp_path):
    out = tmp_path / "big.bin"
    out.write_bytes(DATA[:123_457])
    curl("-C", "-", "-o", str(out), site.url + "/big.bin")
    assert out.read_bytes() == DATA


def test_wget_resumes_a_truncated_download(site, tmp_path):
    wget = need_program("wget")
    out = tmp_path / "big.bin"
    out.write_bytes(DATA[:77_777])
    done = subprocess.run([wget, "-q", "-c", "-O", str(out), site.url + "/big.bin"], capture_output=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == DATA


# -- validators -------------------------------------------------------------------------------


def test_curl_etag_save_and_compare(site, tmp_path):
    etag_file = tmp_path / "etag"
    out = tmp_path / "out"
    code = curl("--etag-save", str(etag_file), "-o", str(out), "-w", "%{http_code}", site.url + "/big.bin")
    assert code == b"200" and out.read_bytes() == DATA
    assert etag_file.read_text().strip() == get(site, "/big.bin").headers["etag"]
    out.unlink()
    code = curl("--etag-compare", str(etag_file), "-o", str(out), "-w", "%{http_code}", site.url + "/big.bin")
    assert code == b"304"
    # The file changes: a new tag, the whole file again.
    (site.root / "big.bin").write_bytes(DATA[::-1])
    code = curl("--etag-compare", str(etag_file), "-o", str(out), "-w", "%{http_code}", site.url + "/big.bin")
    assert code == b"200" and out.read_bytes() == DATA[::-1]


def test_curl_time_condition(site, tmp_path):
    path = site.root / "big.bin"
    past = time.time() - 3600
    os.utime(path, (past, past))
    local = tmp_path / "copy"
    local.write_bytes(DATA)
    os.utime(local, (past, past))
    assert curl("-z", str(local), "-w", "%{http_code}", site.url + "/big.bin") == b"304"
    os.utime(local, (past - 60, past - 60))  # the local copy is older
    out = curl("-z", str(local), site.url + "/big.bin")
    assert out == DATA


def test_304_carries_what_the_200_would(site):
    for path in ("/page.txt", "/big.bin", "/app.js"):
        full = requests.get(site.url + path, headers={"Accept-Encoding": "gzip"})
        r = requests.get(site.url + path, headers={"Accept-Encoding": "gzip", "If-None-Match": full.headers["etag"]})
        assert r.status_code == 304 and r.content == b""
        for name in ("etag", "last-modified", "cache-control", "vary"):
            assert r.headers.get(name) == full.headers.get(name), (path, name)
        assert "content-type" not in r.headers  # not among a 304's fields (RFC 9110 section 15.4.5)
        assert r.headers.get("content-encoding") == (None if path != "/app.js" else "gzip")
    # page.txt is compressed on the fly: the 200 and the 304 both vary on Accept-Encoding,
    # and the compressed body's tag is weak (it names other bytes).
    full = requests.get(site.url + "/page.txt", headers={"Accept-Encoding": "gzip"})
    assert full.headers["content-encoding"] == "gzip" and full.content == TEXT
    assert full.headers["vary"] == "Accept-Encoding" and full.headers["etag"].startswith('W/"')


# -- precompressed siblings -------------------------------------------------------------------


def test_precompressed_siblings(site):
    gz = (site.root / "app.js.gz").read_bytes()
    br = (site.root / "app.js.br").read_bytes()
    r = requests.get(site.url + "/app.js", headers={"Accept-Encoding": "gzip"}, stream=True)
    raw = r.raw.read(decode_content=False)
    assert r.headers["content-encoding"] == "gzip" and raw == gz
    assert r.headers["vary"] == "Accept-Encoding"
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert int(r.headers["content-length"]) == len(gz)
    r = requests.get(site.url + "/app.js", headers={"Accept-Encoding": "gzip, br"}, stream=True)
    assert r.headers["content-encoding"] == "br" and r.raw.read(decode_content=False) == br
    r = requests.get(site.url + "/app.js", headers={"Accept-Encoding": "br;q=0.5, gzip"}, stream=True)
    assert r.headers["content-encoding"] == "gzip"
    r = get(site, "/app.js")
    assert "content-encoding" not in r.headers and r.content == TEXT
    assert r.headers["vary"] == "Accept-Encoding"
    # Ranges count the encoded bytes.
    r = requests.get(site.url + "/app.js", headers={"Accept-Encoding": "gzip", "Range": "bytes=0-99"}, stream=True)
    assert r.status_code == 206 and r.raw.read(decode_content=False) == gz[:100]
    assert r.headers["content-range"] == "bytes 0-99/%d" % len(gz)
    assert r.headers["content-encoding"] == "gzip"


def test_sibling_symlink_is_not_followed(site, tmp_path):
    (tmp_path / "secret.gz").write_bytes(b"SECRET")
    (site.root / "page.txt.gz").symlink_to(tmp_path / "secret.gz")
    r = requests.get(site.url + "/page.txt", headers={"Accept-Encoding": "gzip"})
    assert r.content == TEXT and b"SECRET" not in r.content


# -- types, options, handlers, TLS ---------------------------------------------------------------


@pytest.mark.parametrize("name, kind", [
    ("m.mjs", "text/javascript; charset=utf-8"), ("w.wasm", "application/wasm"), ("i.webp", "image/webp"),
    ("i.avif", "image/avif"), ("i.svg", "image/svg+xml"), ("d.json", "application/json; charset=utf-8"),
])
def test_content_types(name, kind):
    assert static.content_type("/x/" + name) == kind


def test_send_file_from_a_handler(tmp_path, live_server):
    (tmp_path / "report.bin").write_bytes(DATA)

    def handle(method, query, args, headers, body, ctx):
        return static.send_file(str(tmp_path / "report.bin"), method, headers)

    srv = live_server(handle)
    r = requests.get(srv.url + "/anything", headers={"Range": "bytes=5-14"})
    assert r.status_code == 206 and r.content == DATA[5:15]
    tag = r.headers["etag"]
    assert requests.get(srv.url + "/x", headers={"If-None-Match": tag}).status_code == 304
    assert requests.get(srv.url + "/x").content == DATA
    assert requests.head(srv.url + "/x").headers["content-length"] == str(SIZE)
    assert static.send_file(str(tmp_path / "missing"), "GET", {})[1] == 404


def test_files_over_tls_are_read_in_bounded_blocks(tmp_path, live_server):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "pair.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "big.bin").write_bytes(DATA)
    srv = live_server(static.make_handle(str(tmp_path)),
                      ssl={"default": {"cert": str(tmp_path / "pair.pem"), "key": str(tmp_path / "pair.pem")}})
    url = "https://127.0.0.1:%d/big.bin" % srv.port
    verify = str(tmp_path / "ca.pem")
    assert requests.get(url, verify=verify).content == DATA
    r = requests.get(url, verify=verify, headers={"Range": "bytes=1000-2999"})
    assert r.status_code == 206 and r.content == DATA[1000:3000]
    r = requests.get(url, verify=verify, headers={"Range": "bytes=0-9,-10"})
    assert [p[2] for p in parse_multipart(r)] == [DATA[:10], DATA[-10:]]


def test_cli_cache_control_and_no_listing(tmp_path, run):
    (tmp_path / "dir").mkdir()
    (tmp_path / "a.txt").write_text("a")
    proc = run(["--port", "0", "--root", str(tmp_path), "--cache-control", "no-cache", "--no-listing"], tmp_path)
    r = requests.get(proc.url + "/a.txt")
    assert r.text == "a" and r.headers["cache-control"] == "no-cache"
    assert requests.get(proc.url + "/dir/").status_code == 404
    plain = run(["--port", "0", "--root", str(tmp_path)], tmp_path)
    assert requests.get(plain.url + "/dir/").status_code == 200
    assert "cache-control" not in requests.get(plain.url + "/a.txt").headers


def test_head_and_keep_alive_after_a_range(site):
    with site.connect() as sock:
        f = sock.makefile("rb")
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-4\r\n\r\n"
                     b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-4\r\n\r\n"
                     b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=7-8,100-101\r\n\r\n")
        status, headers, body = read_response(f)
        assert status == 206 and body == DATA[:5]
        status, headers, _ = read_response(f, head_only=True)
        assert status == 200 and headers["content-length"] == str(SIZE)  # HEAD ignores Range
        status, headers, body = read_response(f)
        assert status == 206 and DATA[7:9] in body and DATA[100:102] in body
        f.close()


def test_text_files_compressed_on_the_fly(site):
    """A small text file is compressed once and served from the server's cache
    (Content-Length); a big one is compressed as it streams (chunked)."""
    (site.root / "huge.txt").write_bytes(TEXT * 3)
    answers = [requests.get(site.url + "/page.txt", headers={"Accept-Encoding": "gzip"}, stream=True)
               for _ in range(2)]
    raws = [r.raw.read(decode_content=False) for r in answers]
    assert raws[0] == raws[1] and gzip.decompress(raws[0]) == TEXT
    assert int(answers[0].headers["content-length"]) == len(raws[0])
    assert answers[0].headers["etag"].startswith('W/"')
    r = requests.get(site.url + "/huge.txt", headers={"Accept-Encoding": "gzip"})
    assert r.headers["transfer-encoding"] == "chunked" and r.headers["content-encoding"] == "gzip"
    assert r.content == TEXT * 3 and r.headers["etag"].startswith('W/"')
    # A range of either is sent as it is.
    r = requests.get(site.url + "/huge.txt", headers={"Accept-Encoding": "gzip", "Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == TEXT[:100] and "content-encoding" not in r.headers
    assert r.headers["vary"] == "Accept-Encoding"
