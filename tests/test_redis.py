"""ctx["redis"] against a real redis-server, and monkeypatched blocking code in handlers.

The servers here run through the CLI in a subprocess, as users run them: the
CLI monkeypatches before importing the handler, so redis-py and requests
cooperate with gevent.
"""

import concurrent.futures
import http.server
import json
import os
import shutil
import subprocess
import textwrap
import threading
import time

import pytest
import requests

from lilush_http import server
from conftest import free_port

redis = pytest.importorskip("redis")


def start_redis(directory, *args, client=None):
    """redis-server ARGS in ``directory``, once ``client`` (default: on ``--port``) answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("LILUSH_HTTP_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is not installed and LILUSH_HTTP_REQUIRE_REDIS=1")
        pytest.skip("redis-server is not installed")
    process = subprocess.Popen([binary, *args, "--bind", "127.0.0.1", "--dir", str(directory)],
                               cwd=str(directory), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = client or redis.Redis(port=int(args[list(args).index("--port") + 1]))
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            assert process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def redis_directory(tmp_path_factory):
    return tmp_path_factory.mktemp("redis")


@pytest.fixture(scope="module")
def redis_server(redis_directory):
    """A real redis-server on a free port (and the unix socket redis.sock) in a temporary directory."""
    port = free_port()
    process = start_redis(redis_directory, "--port", str(port), "--save", "", "--appendonly", "no",
                          "--unixsocket", str(redis_directory / "redis.sock"), "--unixsocketperm", "700")
    yield port
    process.terminate()
    process.wait(10)


def write_app(tmp_path, source, config):
    (tmp_path / "app.py").write_text(textwrap.dedent(source))
    (tmp_path / "config.json").write_text(json.dumps(config))


def test_hit_counter_under_200_concurrent_requests(redis_server, tmp_path, run):
    client = redis.Redis(port=redis_server)
    client.delete("hits")
    write_app(tmp_path, """
        def handle(method, query, args, headers, body, ctx):
            return str(ctx["redis"].incr("hits")), 200, {"content-type": "text/plain"}
    """, {"redis": {"port": redis_server, "max_connections": 20}, "connection_limit": 256,
          "log_level": "info"})
    live = run(["app:handle", "--port", "0", "--config", "config.json"], tmp_path)
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(lambda i: requests.get(live.url + "/%d" % i, timeout=30).status_code,
                                 range(200)))
    assert statuses == [200] * 200
    assert int(client.get("hits")) == 200


def test_blpop_in_one_handler_does_not_block_others(redis_server, tmp_path, run):
    redis.Redis(port=redis_server).delete("never")
    write_app(tmp_path, """
        def handle(method, query, args, headers, body, ctx):
            if query == "/wait":
                ctx["redis"].blpop("never", timeout=1)
                return "waited", 200, {}
            return "quick", 200, {}
    """, {"redis": {"port": redis_server}, "log_level": "info"})
    live = run(["app:handle", "--port", "0", "--config", "config.json"], tmp_path)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        slow = pool.submit(requests.get, live.url + "/wait", timeout=10)
        time.sleep(0.2)  # the BLPOP is now blocking in the server
        started = time.monotonic()
        quick = requests.get(live.url + "/quick", timeout=10)
        quick_time = time.monotonic() - started
        assert quick.text == "quick" and quick_time < 0.5
        assert not slow.done()
        assert slow.result().text == "waited"


def test_redis_down_server_still_serves(tmp_path, run):
    write_app(tmp_path, """
        import redis
        def handle(method, query, args, headers, body, ctx):
            if query == "/caught":
                try:
                    ctx["redis"].get("x")
                except redis.exceptions.ConnectionError as exc:
                    return "redis error: " + type(exc).__name__, 503, {}
            if query == "/uncaught":
                ctx["redis"].get("x")
            return "up", 200, {}
    """, {"redis": {"port": free_port(), "timeout": 1}})
    live = run(["app:handle", "--port", "0", "--config", "config.json"], tmp_path)
    assert requests.get(live.url + "/").text == "up"
    response = requests.get(live.url + "/caught")
    assert response.status_code == 503 and response.text == "redis error: ConnectionError"
    assert requests.get(live.url + "/uncaught").status_code == 500
    assert requests.get(live.url + "/").text == "up"


def test_ctx_redis_is_a_client_on_one_pool(redis_server, live_server):
    seen = []
    live = live_server(lambda m, q, a, h, b, ctx: seen.append(ctx["redis"]) or ("ok", 200, {}),
                       redis={"port": redis_server, "db": 2})
    requests.get(live.url)
    requests.get(live.url)
    assert len(seen) == 2 and seen[0] is seen[1] and seen[0] is live.srv.redis
    assert isinstance(seen[0], redis.Redis)
    assert seen[0].connection_pool.connection_kwargs["db"] == 2
    assert seen[0].ping() is True


@pytest.mark.parametrize("bad,key", [
    ({"port": 0}, "redis.port"), ({"db": -1}, "redis.db"), ({"timeout": 0}, "redis.timeout"),
    ({"max_connections": 0}, "redis.max_connections"), ({"hostname": "x"}, "redis"),
    ("localhost", "redis"),
])
def test_bad_redis_config(bad, key):
    srv, err = server.new({"redis": bad})
    assert srv is None and err.startswith(key + ":"), err


def test_monkeypatched_requests_in_handlers_run_concurrently(tmp_path, run):
    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            time.sleep(0.5)
            body = b"backend"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    backend.daemon_threads = True
    thread = threading.Thread(target=backend.serve_forever, daemon=True)
    thread.start()
    try:
        write_app(tmp_path, """
            import requests
            def handle(method, query, args, headers, body, ctx):
                return requests.get("http://127.0.0.1:%d/", timeout=10).text, 200, {}
        """ % backend.server_address[1], {"log_level": "info"})
        live = run(["app:handle", "--port", "0", "--config", "config.json"], tmp_path)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            bodies = list(pool.map(lambda i: requests.get(live.url, timeout=30).text, range(50)))
        elapsed = time.monotonic() - started
        assert bodies == ["backend"] * 50
        assert elapsed < 5  # 50 x 0.5 s one after another would be 25 s
    finally:
        backend.shutdown()
        backend.server_close()


def counting_app(tmp_path, redis_config):
    write_app(tmp_path, """
        def handle(method, query, args, headers, body, ctx):
            return str(ctx["redis"].incr("url-hits")), 200, {"content-type": "text/plain"}
    """, {"redis": redis_config, "log_level": "info"})


def test_redis_url_and_unix_url(redis_server, redis_directory, tmp_path, run):
    for db, url in [(3, "redis://127.0.0.1:%d/3" % redis_server),
                    (4, "unix://%s?db=4" % (redis_directory / "redis.sock"))]:
        client = redis.Redis(port=redis_server, db=db)
        client.set("url-hits", 10)
        counting_app(tmp_path, {"url": url})
        live = run(["app:handle", "--port", "0", "--config", "config.json"], tmp_path)
        assert [requests.get(live.url).text for _ in range(3)] == ["11", "12", "13"]
        assert int(client.get("url-hits")) == 13
        live.kill()


def test_rediss_url_with_a_tls_redis(tmp_path, run):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    paths = {name: str(tmp_path / name) for name in ("ca.pem", "cert.pem", "key.pem")}
    ca.cert_pem.write_to_path(paths["ca.pem"])
    cert.cert_chain_pems[0].write_to_path(paths["cert.pem"])
    cert.private_key_pem.write_to_path(paths["key.pem"])
    port = free_port()
    client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=paths["ca.pem"])
    process = start_redis(tmp_path, "--port", "0", "--tls-port", str(port), "--tls-cert-file", paths["cert.pem"],
                          "--tls-key-file", paths["key.pem"], "--tls-ca-cert-file", paths["ca.pem"],
                          "--tls-auth-clients", "no", "--save", "", client=client)
    try:
        client.set("url-hits", 41)
        counting_app(tmp_path, {"url": "rediss://127.0.0.1:%d/0?ssl_ca_certs=%s" % (port, paths["ca.pem"])})
        live = run(["app:handle", "--port", "0", "--config", "config.json"], tmp_path)
        assert requests.get(live.url).text == "42"
        assert int(client.get("url-hits")) == 42
    finally:
        process.terminate()
        process.wait(10)


def test_sentinel_finds_the_master(redis_server, tmp_path, run):
    port = free_port()
    (tmp_path / "sentinel.conf").write_text(
        "port %d\nsentinel monitor main-redis 127.0.0.1 %d 1\n" % (port, redis_server))
    process = start_redis(tmp_path, str(tmp_path / "sentinel.conf"), "--sentinel", "--port", str(port))
    try:
        redis.Redis(port=redis_server).set("url-hits", 99)
        counting_app(tmp_path, {"sentinels": [["127.0.0.1", port]], "service_name": "main-redis"})
        live = run(["app:handle", "--port", "0", "--config", "config.json"], tmp_path)
        assert requests.get(live.url).text == "100"
        assert int(redis.Redis(port=redis_server).get("url-hits")) == 100
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize("bad,message", [
    ({"url": "http://x"}, "redis.url: expected a redis://"),
    ({"url": "redis://x", "port": 6379}, "redis.port: give url or port, not both"),
    ({"sentinels": [["127.0.0.1", 26379]]}, "redis.service_name: the master's name is required"),
    ({"sentinels": ["127.0.0.1:26379"], "service_name": "m"}, "redis.sentinels: expected a list of [host, port]"),
    ({"service_name": "m"}, "redis.service_name: given without sentinels"),
    ({"url": "redis://x", "sentinels": [["a", 1]], "service_name": "m"}, "redis.url: give url or sentinels"),
])
def test_bad_redis_url_or_sentinel_config(bad, message):
    srv, err = server.new({"redis": bad})
    assert srv is None and err.startswith(message), err
