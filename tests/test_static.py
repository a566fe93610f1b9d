"""The static file handler (what ``lilush-http`` serves without a handler),
driven through a live server with requests and raw sockets."""

import os
import socket
import time
from email.utils import formatdate

import pytest
import requests

from conftest import read_response
from lilush_http import static

MARKER = "TOP-SECRET-OUTSIDE-THE-ROOT"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture
def site(tmp_path, live_server):
    """A root with a few files, secrets next to it, and a live server on it."""
    (tmp_path / "outside.txt").write_text(MARKER)
    (tmp_path / "secret").write_text(MARKER)
    (tmp_path / "root2").mkdir()  # a sibling whose name starts like the root's
    (tmp_path / "root2" / "x.txt").write_text(MARKER)
    root = tmp_path / "root"
    root.mkdir()
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "style.css").write_text("body { color: red }")
    (root / "app.js").write_text("console.log('hi');")
    (root / "data.json").write_text('{"a": 1}')
    (root / "image.png").write_bytes(PNG)
    (root / "notes.txt").write_text("plain text, caf\u00e9\n", encoding="utf-8")
    (root / "blob.xyzzy").write_bytes(b"\x00\x01\x02binary")
    (root / "README").write_text("no extension")
    (root / "archive.tar.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    (root / "hello world.txt").write_text("spaced")
    (root / "caf\u00e9.txt").write_text("accented")
    (root / ".env").write_text("SECRET=" + MARKER)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text(MARKER)
    sub = root / "sub"
    sub.mkdir()
    (sub / "index.html").write_text("<p>sub index</p>")
    (sub / "page.txt").write_text("sub page")
    empty = root / "files"
    empty.mkdir()
    (empty / "one.txt").write_text("1")
    (empty / "<two>&.txt").write_text("2")
    (empty / ".hidden").write_text(MARKER)
    (empty / "nested").mkdir()
    srv = live_server(static.make_handle(str(root)))
    srv.root = root
    srv.tmp = tmp_path
    return srv


def raw(srv, target, method="GET", extra=b""):
    """Send one request with ``target`` exactly as given; (status, headers, body)."""
    with srv.connect() as sock:
        if isinstance(target, str):
            target = target.encode("latin-1")
        sock.sendall(method.encode() + b" " + target + b" HTTP/1.1\r\nHost: x\r\n" + extra
                     + b"Connection: close\r\n\r\n")
        return read_response(sock, head_only=(method == "HEAD"))


# -- content -------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("index.html", ("text/html; charset=utf-8",)),
    ("style.css", ("text/css; charset=utf-8",)),
    ("app.js", ("text/javascript; charset=utf-8", "application/javascript; charset=utf-8")),
    ("data.json", ("application/json; charset=utf-8",)),
    ("image.png", ("image/png",)),
    ("notes.txt", ("text/plain; charset=utf-8",)),
    ("blob.xyzzy", ("application/octet-stream",)),
    ("README", ("application/octet-stream",)),
    ("archive.tar.gz", ("application/octet-stream",)),
])
def test_content_types_and_bytes(site, name, expected):
    r = requests.get(site.url + "/" + name, headers={"Accept-Encoding": "identity"})
    data = (site.root / name).read_bytes()
    assert r.status_code == 200
    assert r.headers["content-type"] in expected
    assert r.content == data
    assert int(r.headers["content-length"]) == len(data)
    assert "last-modified" in r.headers
    # And on the wire, byte for byte.
    status, headers, body = raw(site, "/" + name)
    assert status == 200 and body == data and int(headers["content-length"]) == len(data)


def test_percent_encoded_names_and_query_string(site):
    assert requests.get(site.url + "/hello%20world.txt").text == "spaced"
    assert requests.get(site.url + "/caf%C3%A9.txt").text == "accented"
    r = requests.get(site.url + "/notes.txt?v=3&x=%2e%2e")
    assert r.status_code == 200 and r.content == (site.root / "notes.txt").read_bytes()


def test_keep_alive_several_files_on_one_connection(site):
    with site.connect() as sock:
        f = sock.makefile("rb")
        for name in ("style.css", "image.png", "data.json"):
            sock.sendall(b"GET /" + name.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, body = read_response(f)
            assert status == 200 and body == (site.root / name).read_bytes()
        f.close()


# -- directories ---------------------------------------------------------------------


def test_root_serves_index_html(site):
    r = requests.get(site.url + "/")
    assert r.status_code == 200
    assert r.text == "<h1>home</h1>"
    assert r.headers["content-type"] == "text/html; charset=utf-8"


def test_subdirectory_with_index_html(site):
    r = requests.get(site.url + "/sub/")
    assert r.status_code == 200 and r.text == "<p>sub index</p>"
    assert requests.get(site.url + "/sub/page.txt").text == "sub page"


def test_directory_listing_names_files_and_hides_dotfiles(site):
    r = requests.get(site.url + "/files/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert 'href="one.txt"' in r.text
    assert 'href="nested/"' in r.text
    # Names are escaped in the page and quoted in the link.
    assert "&lt;two&gt;&amp;.txt" in r.text and "<two>" not in r.text
    assert 'href="%3Ctwo%3E%26.txt"' in r.text
    assert ".hidden" not in r.text and MARKER not in r.text
    # The links work.
    assert requests.get(site.url + "/files/%3Ctwo%3E%26.txt").text == "2"


def test_empty_directory_listing(site):
    r = requests.get(site.url + "/files/nested/")
    assert r.status_code == 200 and "Index of /files/nested/" in r.text


@pytest.mark.parametrize("target, location", [
    ("/sub", "/sub/"),
    ("/files", "/files/"),
    ("/files/nested", "/files/nested/"),
    ("/sub?a=1&b=2", "/sub/?a=1&b=2"),
])
def test_directory_without_slash_redirects(site, target, location):
    r = requests.get(site.url + target, allow_redirects=False)
    assert r.status_code == 301
    assert r.headers["location"] == location
    status, headers, _ = raw(site, target, "HEAD")
    assert status == 301 and headers["location"] == location


def test_redirect_is_not_protocol_relative(site):
    """'//example.com' names the directory example.com under the root; the redirect
    must stay on this host ('//example.com/' would send a browser to example.com)."""
    (site.root / "example.com").mkdir()
    status, headers, _ = raw(site, "//example.com")
    assert status == 301
    assert not headers["location"].startswith("//")
    assert headers["location"].rstrip("/").endswith("example.com")


# -- errors and methods ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/missing.txt", "/sub/missing", "/missing/", "/notes.txt/", "/notes.txt/x"])
def test_missing_is_404(site, path):
    r = requests.get(site.url + path)
    assert r.status_code == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405_with_allow(site, method):
    r = requests.request(method, site.url + "/notes.txt", data=b"x" if method in ("POST", "PUT") else None)
    assert r.status_code == 405
    allowed = {m.strip() for m in r.headers["allow"].split(",")}
    assert allowed == {"GET", "HEAD"}
    assert MARKER not in r.text


def test_head_same_headers_as_get_and_no_body(site):
    for target in ("/notes.txt", "/image.png", "/", "/files/"):
        _, get_headers, get_body = raw(site, target)
        with site.connect() as sock:
            sock.sendall(b"HEAD " + target.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            f = sock.makefile("rb")
            status, head_headers, _ = read_response(f, head_only=True)
            assert status == 200
            # Nothing follows the head (the connection stays open, so wait a little).
            sock.settimeout(0.3)
            try:
                extra = sock.recv(65536)  # b"" (closed without sending more) is fine too
            except socket.timeout:
                extra = b""
            assert extra == b"", extra
            f.close()
        for h in (get_headers, head_headers):
            h.pop("date", None)
            h.pop("connection", None)
        assert head_headers == get_headers
        assert int(head_headers["content-length"]) == len(get_body) > 0


def test_fifo_is_not_served(site):
    os.mkfifo(site.root / "pipe")
    r = requests.get(site.url + "/pipe", timeout=5)
    assert r.status_code == 404


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_404(site):
    p = site.root / "locked.txt"
    p.write_text("locked")
    p.chmod(0)
    try:
        assert requests.get(site.url + "/locked.txt").status_code == 404
    finally:
        p.chmod(0o644)


# -- no escape from the root ---------------------------------------------------------------


TRAVERSALS = [
    "/../outside.txt", "/../secret", "/%2e%2e/secret", "/%2E%2E/outside.txt",
    "/sub/../../secret", "/sub/../../outside.txt", "/sub/%2e%2e/%2e%2e/secret",
    "/%2e%2e%2fsecret", "/%2e%2e%2Foutside.txt", "/..%2fsecret", "/..%2Fsecret",
    "/.%2e/secret", "/%2e./secret", "/sub/.%2e/.%2e/secret",
    "/..%5csecret", "/%2e%2e%5csecret", "/..\\secret", "/sub\\..\\..\\secret",
    "/%252e%252e/secret", "/%2e%2e%2f%2e%2e%2fsecret",
    "/../root2/x.txt", "/%2e%2e/root2/x.txt",
    "/secret%00", "/%00/../secret", "/notes.txt%00.html", "/%ff/../secret", "/%ff", "/%c0%ae%c0%ae/secret",
    "..%2fsecret", "../secret", "/....//secret", "/./../secret", "//../secret",
    "/" + "../" * 20 + "etc/passwd",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_never_leaves_the_root(site, target):
    status, _, body = raw(site, target)
    assert MARKER.encode() not in body
    assert b"root:" not in body  # /etc/passwd
    assert status in (400, 404), (target, status, body)


@pytest.mark.parametrize("target", ["/../outside.txt", "/%2e%2e/secret", "/..%2fsecret"])
def test_traversal_with_head(site, target):
    status, _, _ = raw(site, target, "HEAD")
    assert status in (400, 404)


def test_traversal_with_curl_path_as_is(site):
    import subprocess
    for target in ("/../outside.txt", "/sub/../../secret", "/%2e%2e/secret"):
        out = subprocess.run(["/usr/bin/curl", "-s", "--path-as-is", "-o", "-", "-w", "\n%{http_code}",
                              site.url + target], capture_output=True, timeout=10)
        body, _, code = out.stdout.rpartition(b"\n")
        assert code == b"404" and MARKER.encode() not in body


def test_symlink_pointing_outside_is_404(site):
    os.symlink(site.tmp / "outside.txt", site.root / "link-out.txt")
    os.symlink(site.tmp / "root2", site.root / "dir-out")
    os.symlink(site.tmp, site.root / "parent")
    os.symlink("../outside.txt", site.root / "rel-out.txt")
    for target in ("/link-out.txt", "/dir-out/", "/dir-out/x.txt", "/dir-out", "/parent/", "/parent/secret",
                   "/rel-out.txt"):
        status, _, body = raw(site, target)
        assert status == 404, target
        assert MARKER.encode() not in body


def test_symlink_pointing_inside_works(site):
    os.symlink(site.root / "notes.txt", site.root / "link-in.txt")
    os.symlink("sub", site.root / "alias")
    assert requests.get(site.url + "/link-in.txt").content == (site.root / "notes.txt").read_bytes()
    assert requests.get(site.url + "/alias/page.txt").text == "sub page"
    assert requests.get(site.url + "/alias/").text == "<p>sub index</p>"


@pytest.mark.parametrize("target", ["/.env", "/.git/config", "/.git/", "/.git", "/%2eenv", "/%2egit/config",
                                    "/files/.hidden", "/sub/../.env"])
def test_dotfiles_are_404(site, target):
    status, _, body = raw(site, target)
    assert status == 404
    assert MARKER.encode() not in body


# -- conditional requests ------------------------------------------------------------------


def test_if_modified_since(site):
    path = site.root / "notes.txt"
    past = time.time() - 3600
    os.utime(path, (past, past))
    r = requests.get(site.url + "/notes.txt")
    last_modified = r.headers["last-modified"]
    assert last_modified == formatdate(int(past), usegmt=True)

    status, headers, body = raw(site, "/notes.txt", extra=b"If-Modified-Since: " + last_modified.encode() + b"\r\n")
    assert status == 304 and body == b""
    assert headers.get("last-modified") == last_modified
    assert "content-length" not in headers or headers["content-length"] == "0"

    # The same with requests, and with HEAD.
    r = requests.get(site.url + "/notes.txt", headers={"If-Modified-Since": last_modified})
    assert r.status_code == 304 and r.content == b""
    r = requests.head(site.url + "/notes.txt", headers={"If-Modified-Since": last_modified})
    assert r.status_code == 304

    # A later date is also "not modified"; an earlier one or garbage gets the file.
    later = formatdate(int(past) + 60, usegmt=True)
    assert requests.get(site.url + "/notes.txt", headers={"If-Modified-Since": later}).status_code == 304
    earlier = formatdate(int(past) - 60, usegmt=True)
    r = requests.get(site.url + "/notes.txt", headers={"If-Modified-Since": earlier})
    assert r.status_code == 200 and r.content == path.read_bytes()
    for junk in ("yesterday", "", "Mon, 99 Foo 2020 99:99:99 GMT"):
        r = requests.get(site.url + "/notes.txt", headers={"If-Modified-Since": junk})
        assert r.status_code == 200 and r.content == path.read_bytes()


def test_if_modified_since_after_change(site):
    path = site.root / "notes.txt"
    past = time.time() - 3600
    os.utime(path, (past, past))
    last_modified = requests.get(site.url + "/notes.txt").headers["last-modified"]
    path.write_text("changed")
    r = requests.get(site.url + "/notes.txt", headers={"If-Modified-Since": last_modified})
    assert r.status_code == 200 and r.text == "changed"


def test_keep_alive_after_304(site):
    last_modified = requests.get(site.url + "/notes.txt").headers["last-modified"]
    with site.connect() as sock:
        f = sock.makefile("rb")
        sock.sendall(b"GET /notes.txt HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: "
                     + last_modified.encode() + b"\r\n\r\nGET /sub/page.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(f)[0] == 304
        status, _, body = read_response(f)
        assert status == 200 and body == b"sub page"
        f.close()


def test_root_given_through_a_symlink(tmp_path, live_server):
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.txt").write_text("through the link")
    (tmp_path / "outside.txt").write_text(MARKER)
    os.symlink(real, tmp_path / "link")
    srv = live_server(static.make_handle(str(tmp_path / "link")))
    assert requests.get(srv.url + "/a.txt").text == "through the link"
    status, _, body = raw(srv, "/../outside.txt")
    assert status == 404 and MARKER.encode() not in body
