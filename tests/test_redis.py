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


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A real redis-server on a free port in a temporary directory."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("LILUSH_HTTP_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is not installed and LILUSH_HTTP_REQUIRE_REDIS=1")
        pytest.skip("redis-server is not installed")
    directory = tmp_path_factory.mktemp("redis")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(directory)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
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
