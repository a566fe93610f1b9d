"""HTTP/2 with clients nobody here wrote: curl, nghttp, h2load, httpx, Node's http2 module,
headless Chromium and HAProxy (proto h2 to the backend); a Flask app and a Lilush-style
handler over both HTTP/1.1 and HTTP/2; concurrency on one connection; big bodies byte-exact."""

import hashlib
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import pytest
import trustme

import h2_frames as h2
from conftest import LiveServer, free_port, need_program
from lilush_http.wsgi import to_handle

TESTS = os.path.dirname(os.path.abspath(__file__))
ASSETS = 50
DOWNLOAD = 10 * 1024 * 1024
UPLOAD = 5 * 1024 * 1024
CONFIG = {"connection_limit": 200, "max_body_size": 16 * 1024 * 1024, "log_level": "error"}

reports = []  # what Chromium's page POSTs to /report


def page():
    """An HTML page with ASSETS images; once loaded it reports every resource's protocol."""
    images = "".join('<img src="/asset/%d.svg" width="8" height="8">' % i for i in range(ASSETS))
    script = ("window.addEventListener('load', () => { const entries = performance.getEntriesByType('resource')"
              ".map(e => [e.name, e.nextHopProtocol]); const nav = performance.getEntriesByType('navigation')[0]"
              ".nextHopProtocol; fetch('/report', {method: 'POST', body: JSON.stringify({nav, entries})}); });")
    return "<!DOCTYPE html><html><head><title>h2</title><script>%s</script></head><body>%s</body></html>" % (
        script, images)


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>'


def handle(method, query, args, headers, body, ctx):
    """h2_frames.handle plus the Chromium page, its assets and its report."""
    if query == "/page":
        return page(), 200, {"content-type": "text/html"}
    if query.startswith("/asset/"):
        return SVG, 200, {"content-type": "image/svg+xml", "cache-control": "no-store"}
    if query == "/report":
        reports.append(json.loads(body if isinstance(body, (bytes, str)) else body.read()))
        return b"ok", 200, {"content-type": "text/plain"}
    return h2.handle(method, query, args, headers, body, ctx)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("h2pki")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    paths = {"ca": str(d / "ca.pem"), "cert": str(d / "cert.pem"), "key": str(d / "key.pem")}
    ca.cert_pem.write_to_path(paths["ca"])
    cert.cert_chain_pems[0].write_to_path(paths["cert"])
    cert.private_key_pem.write_to_path(paths["key"])
    return paths


@pytest.fixture(scope="module")
def plain():
    """A plain listener: HTTP/1.1 and prior-knowledge HTTP/2."""
    live = LiveServer(handle, **CONFIG)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def tls(pki):
    """A TLS listener offering h2 and http/1.1 through ALPN."""
    live = LiveServer(handle, ssl={"default": {"cert": pki["cert"], "key": pki["key"]}}, **CONFIG)
    live.url = "https://127.0.0.1:%d" % live.port
    yield live
    live.stop()


def run(args, timeout=60, **kw):
    out = subprocess.run(args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    assert out.returncode == 0, (args, out.returncode, out.stdout[-2000:], out.stderr[-2000:])
    return out


def sha(data):
    return hashlib.sha256(data).hexdigest()


# -- curl --------------------------------------------------------------------------------------

def test_curl_http2_over_tls(tls, pki):
    out = run([need_program("curl"), "-sS", "--http2", "--cacert", pki["ca"], "-w", "\\n%{http_version}",
               tls.url + "/echo"])
    body, version = out.stdout.decode().rsplit("\n", 1)
    assert version == "2"
    seen = json.loads(body)
    assert seen["version"] == "HTTP/2" and seen["host"] == "127.0.0.1:%d" % tls.port


def test_curl_prior_knowledge(plain):
    out = run([need_program("curl"), "-sS", "--http2-prior-knowledge", "-w", "\\n%{http_version}", plain.url + "/"])
    assert out.stdout.decode() == "hello\n2"


def test_alpn_h2_with_a_raw_client_verifying_the_certificate(tls, pki):
    """The raw-socket harness over TLS: ALPN picks h2 (Client asserts it), the certificate verifies."""
    with h2.Client(("127.0.0.1", tls.port), tls=h2.tls_context(pki["ca"]), server_hostname="localhost") as c:
        result = c.start().fetch("/echo", extra=[("x-token", "over-tls")])
    assert result.status == 200 and json.loads(result.body)["x-token"] == "over-tls"


def test_curl_without_http2_still_gets_http11_over_tls(tls, pki):
    out = run([need_program("curl"), "-sS", "--http1.1", "--cacert", pki["ca"], "-w", "\\n%{http_version}",
               tls.url + "/echo"])
    body, version = out.stdout.decode().rsplit("\n", 1)
    assert version == "1.1" and json.loads(body)["version"] == "HTTP/1.1"


def test_curl_download_10mb_and_upload_5mb_byte_exact(plain, tmp_path):
    curl = need_program("curl")
    target = tmp_path / "down.bin"
    out = run([curl, "-sS", "--http2-prior-knowledge", "-o", str(target), "-w", "%{http_version}",
               plain.url + "/size/%d" % DOWNLOAD])
    assert out.stdout.decode() == "2"
    assert sha(target.read_bytes()) == sha(h2.pattern(DOWNLOAD))
    upload = tmp_path / "up.bin"
    upload.write_bytes(os.urandom(UPLOAD))
    out = run([curl, "-sS", "--http2-prior-knowledge", "--data-binary", "@%s" % upload, plain.url + "/echo"])
    seen = json.loads(out.stdout)
    assert seen["length"] == UPLOAD and seen["sha256"] == sha(upload.read_bytes()) and seen["version"] == "HTTP/2"


# -- nghttp and h2load (nghttp2-client) ------------------------------------------------------------

def test_nghttp_over_tls_and_prior_knowledge(tls, plain):
    nghttp = need_program("nghttp")
    for url in (tls.url + "/echo", plain.url + "/echo"):
        out = run([nghttp, "-v", url], timeout=30)
        text = out.stdout.decode()
        assert re.search(r"recv \(stream_id=\d+\) :status: 200", text), text[-2000:]
        assert '"version": "HTTP/2"' in text


def test_twenty_streams_to_a_one_second_handler_on_one_connection(plain):
    """nghttp sends the 20 requests on one connection; they run at once, not one after another."""
    nghttp = need_program("nghttp")
    out = run([nghttp, "-v", "-m", "20", plain.url + "/slow?s=1"], timeout=30)
    text = out.stdout.decode()
    answered = [float(t) for t in re.findall(r"\[\s*([\d.]+)\] recv \(stream_id=\d+\) :status: 200", text)]
    assert len(answered) == 20, text[-2000:]
    assert 1.0 <= max(answered) < 1.7, answered  # nghttp's clock, from its connect: one handler's time, not 20


@pytest.mark.parametrize("scheme", ["prior-knowledge", "tls"])
def test_h2load(plain, tls, scheme):
    url = (plain.url if scheme == "prior-knowledge" else tls.url) + "/"
    out = run([need_program("h2load"), "-n", "400", "-c", "4", "-m", "10", url], timeout=60)
    text = out.stdout.decode()
    assert re.search(r"requests: 400 total, 400 started, 400 done, 400 succeeded, 0 failed, 0 errored", text), text
    assert re.search(r"status codes: 400 2xx", text), text
    if scheme == "tls":
        assert "Application protocol: h2" in text, text


# -- httpx -----------------------------------------------------------------------------------------

def httpx_client(pki, http2=True, http1=True):
    context = ssl.create_default_context(cafile=pki["ca"])
    return httpx.Client(http2=http2, http1=http1, verify=context, timeout=30)


def test_httpx_http2_over_tls(tls, pki):
    with httpx_client(pki) as client:
        responses = [client.get(tls.url + "/echo", headers={"x-token": "t%d" % i}) for i in range(5)]
    assert all(r.http_version == "HTTP/2" and r.status_code == 200 for r in responses)
    assert [r.json()["x-token"] for r in responses] == ["t%d" % i for i in range(5)]
    assert all(r.json()["version"] == "HTTP/2" for r in responses)


def test_httpx_big_bodies_over_tls(tls, pki):
    upload = os.urandom(UPLOAD)
    with httpx_client(pki) as client:
        down = client.get(tls.url + "/size/%d" % DOWNLOAD)
        up = client.post(tls.url + "/echo", content=upload)
    assert down.http_version == "HTTP/2" and sha(down.content) == sha(h2.pattern(DOWNLOAD))
    assert up.http_version == "HTTP/2" and up.json()["sha256"] == sha(upload) and up.json()["length"] == UPLOAD


# -- Node's http2 module ---------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["prior-knowledge", "tls"])
def test_node_http2_client(plain, tls, pki, scheme):
    node = need_program("node")
    url = plain.url if scheme == "prior-knowledge" else "https://localhost:%d" % tls.port
    args = [node, os.path.join(TESTS, "h2_node_client.js"), url, "10"] + ([pki["ca"]] if scheme == "tls" else [])
    out = run(args, timeout=60)
    results = sorted(json.loads(out.stdout), key=lambda r: r["i"])
    assert [r["status"] for r in results] == [200] * 10
    for r in results:
        sent = b"node body %d" % r["i"]
        assert r["body"]["sha256"] == sha(sent) and r["body"]["version"] == "HTTP/2", r


# -- headless Chromium -----------------------------------------------------------------------------

def test_chromium_loads_fifty_assets_over_h2(tls, tmp_path):
    chromium = need_program("chromium")
    del reports[:]
    profile = tempfile.mkdtemp(prefix="h2-chromium-", dir=str(tmp_path))
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--user-data-dir=" + profile,
            "--ignore-certificate-errors", "https://localhost:%d/page" % tls.port]
    browser = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not reports and time.monotonic() < deadline and browser.poll() is None:
            time.sleep(0.1)
    finally:
        browser.terminate()
        try:
            _, err = browser.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            browser.kill()
            _, err = browser.communicate()
    assert reports, "the page never reported; chromium said: %s" % err.decode("utf-8", "replace")[-2000:]
    report = reports[0]
    assets = [(name, protocol) for name, protocol in report["entries"] if "/asset/" in name]
    assert report["nav"] == "h2", report["nav"]
    assert len(assets) == ASSETS, report
    assert all(protocol == "h2" for _, protocol in assets), assets


# -- HAProxy with proto h2 to the backend ------------------------------------------------------------

HAPROXY_CFG = """
global
    maxconn 100
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend web
    bind 127.0.0.1:{port}
    default_backend app
backend app
    server app1 127.0.0.1:{backend} proto h2
"""


def test_haproxy_proto_h2_to_the_backend(plain, tmp_path):
    haproxy = need_program("haproxy")
    port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(port=port, backend=plain.port))
    log = open(tmp_path / "haproxy.log", "wb")
    proxy = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        url = "http://127.0.0.1:%d" % port
        with httpx.Client(timeout=30) as client:
            deadline = time.monotonic() + 10
            while True:
                try:
                    first = client.get(url + "/echo")
                    break
                except httpx.TransportError:
                    assert proxy.poll() is None and time.monotonic() < deadline, (tmp_path / "haproxy.log").read_text()
                    time.sleep(0.1)
            body = os.urandom(200000)
            posted = client.post(url + "/echo", content=body)
            results = []

            def fetch(i):
                results.append(client.get(url + "/slow?s=0.5").status_code)
            threads = [threading.Thread(target=fetch, args=(i,)) for i in range(10)]
            [t.start() for t in threads]
            [t.join(20) for t in threads]
    finally:
        proxy.terminate()
        proxy.wait(10)
        log.close()
    assert first.status_code == 200 and first.json()["version"] == "HTTP/2", first.text
    assert posted.json()["sha256"] == sha(body) and posted.json()["version"] == "HTTP/2"
    assert results == [200] * 10


# -- a Flask app and a Lilush-style handler, each over both transports ---------------------------------

def flask_handle():
    flask = pytest.importorskip("flask")
    app = flask.Flask("h2_interop")

    @app.route("/item/<int:item_id>", methods=["GET", "POST"])
    def item(item_id):
        data = flask.request.get_data()
        return flask.jsonify(id=item_id, q=flask.request.args.get("q"), host=flask.request.host,
                             protocol=flask.request.environ["SERVER_PROTOCOL"], length=len(data), sha256=sha(data))
    return to_handle(app)


@pytest.mark.parametrize("app", ["flask", "lilush"])
def test_same_answers_over_http11_and_http2(app, pki):
    live = LiveServer(flask_handle() if app == "flask" else handle, ssl={"default": {"cert": pki["cert"],
                                                                                     "key": pki["key"]}}, **CONFIG)
    try:
        base = "https://127.0.0.1:%d" % live.port
        path = "/item/7?q=x" if app == "flask" else "/echo?q=x"
        body = os.urandom(100000)
        answers = {}
        for version, kw in (("HTTP/1.1", {"http2": False}), ("HTTP/2", {"http2": True, "http1": False})):
            with httpx_client(pki, **kw) as client:
                got = client.post(base + path, content=body)
                assert got.status_code == 200 and got.http_version == version, (version, got)
                answers[version] = got.json()
    finally:
        live.stop()
    key = "protocol" if app == "flask" else "version"
    assert answers["HTTP/1.1"][key] == "HTTP/1.1" and answers["HTTP/2"][key] == "HTTP/2"
    for answer in answers.values():
        answer.pop(key)
    assert answers["HTTP/1.1"] == answers["HTTP/2"]
    assert answers["HTTP/2"]["sha256"] == sha(body)


# -- bench/http2.py at a tiny setting ----------------------------------------------------------------------

def test_bench_h2_script_prints_its_table(tmp_path):
    need_program("h2load")
    output = tmp_path / "results-http2.md"
    root = os.path.dirname(TESTS)
    out = subprocess.run([sys.executable, "bench/http2.py", "--servers", "lilush_http", "--modes", "prior",
                          "--requests", "300", "--repeat", "1", "--h1-duration", "0", "--idle", "20",
                          "--output", str(output)],
                         cwd=root, capture_output=True, text=True, timeout=110)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    row = next(line for line in out.stdout.splitlines() if line.startswith("| h2c, prior knowledge | lilush_http |"))
    cells = [cell.strip() for cell in row.split("|")]
    assert float(cells[3]) > 0 and cells[5] == "0", row  # requests per second measured, none failed
    assert re.search(r"Idle connections .*HTTP/1\.1 [\d.]+ KB; HTTP/2 [\d.]+ KB", out.stdout), out.stdout
    assert output.read_text().startswith("# HTTP/2 benchmark results")
