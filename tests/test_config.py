"""configure(): deep merge, every value checked, errors returned, never raised."""

import logging

import pytest

from lilush_http import config, server


def test_new_uses_the_reference_defaults():
    srv, err = server.new()
    assert err is None
    cfg = srv.cfg
    assert (cfg["ip"], cfg["port"], cfg["backlog"]) == ("127.0.0.1", 8080, 256)
    # connection_limit: 64 in Lilush, 1024 here (issue 21: 1,000 keep-alive clients, docs/reliability-notes.rst)
    assert cfg["connection_limit"] == 1024 and cfg["requests_per_connection"] == 512
    assert cfg["max_body_size"] == 5 * 1024 * 1024 and cfg["request_line_limit"] == 8192
    assert (cfg["keepalive_idle_timeout"], cfg["request_header_timeout"],
            cfg["request_body_timeout"], cfg["tls_handshake_timeout"]) == (15, 10, 30, 10)
    assert cfg["compression"]["enabled"] is True and cfg["compression"]["min_size"] == 4096
    assert "application/json" in cfg["compression"]["types"]
    assert cfg["log_level"] == "access"
    assert cfg["log_headers"] == ["referer", "x-real-ip", "user-agent"]
    assert cfg["ssl"] is None and cfg["max_headers"] == 100


def test_configure_deep_merges():
    srv, _ = server.new({"compression": {"min_size": 10}})
    assert srv.cfg["compression"]["min_size"] == 10
    assert srv.cfg["compression"]["enabled"] is True  # siblings kept
    cfg_before = srv.cfg
    assert srv.configure({"compression": {"types": ["text/plain"]}, "port": 9000}) == (True, None)
    assert srv.cfg is cfg_before  # the same dict handlers hold as ctx["cfg"]
    assert srv.cfg["compression"] == {"enabled": True, "min_size": 10, "level": 6, "types": ["text/plain"],
                                      "cache_size": 16 * 1024 * 1024}
    assert srv.cfg["port"] == 9000


def test_user_keys_are_kept_for_handlers():
    srv, err = server.new({"app": {"greeting": "hello"}})
    assert err is None and srv.cfg["app"] == {"greeting": "hello"}


def test_defaults_are_not_shared_between_servers():
    a, _ = server.new()
    b, _ = server.new()
    a.cfg["compression"]["types"].append("x/y")
    assert "x/y" not in b.cfg["compression"]["types"]
    assert "x/y" not in config.DEFAULTS["compression"]["types"]


@pytest.mark.parametrize("bad,key", [
    ({"port": 70000}, "port"),
    ({"port": -1}, "port"),
    ({"port": "80"}, "port"),
    ({"ip": "not an ip"}, "ip"),
    ({"ip": 127}, "ip"),
    ({"backlog": 0}, "backlog"),
    ({"connection_limit": -5}, "connection_limit"),
    ({"connection_limit": 2.5}, "connection_limit"),
    ({"requests_per_connection": 0}, "requests_per_connection"),
    ({"request_line_limit": None}, "request_line_limit"),
    ({"max_headers": 0}, "max_headers"),
    ({"max_body_size": -1}, "max_body_size"),
    ({"keepalive_idle_timeout": 0}, "keepalive_idle_timeout"),
    ({"request_header_timeout": -1}, "request_header_timeout"),
    ({"request_body_timeout": "30"}, "request_body_timeout"),
    ({"response_send_timeout": True}, "response_send_timeout"),
    ({"tls_handshake_timeout": 0}, "tls_handshake_timeout"),
    ({"log_level": "verbose"}, "log_level"),
    ({"log_headers": "user-agent"}, "log_headers"),
    ({"compression": {"enabled": "yes"}}, "compression.enabled"),
    ({"compression": {"min_size": -1}}, "compression.min_size"),
    ({"compression": {"level": 11}}, "compression.level"),
    ({"compression": {"types": "text/html"}}, "compression.types"),
    ({"compression": {"cache_size": -1}}, "compression.cache_size"),
    ({"compression": 5}, "compression"),
    ({"ssl": {"hosts": {}}}, "ssl.default"),
    ({"ssl": "yes"}, "ssl"),
    ({"ssl": {"default": {"cert": "/nonexistent/cert.pem", "key": "/nonexistent/key.pem"}}},
     "ssl.default.cert"),
])
def test_bad_values_name_the_key(bad, key):
    srv, err = server.new(bad)
    assert srv is None
    assert err.startswith(key + ":"), err
    good, _ = server.new()
    before = dict(good.cfg)
    ok, err2 = good.configure(bad)
    assert ok is None and err2 == err
    assert good.cfg == before  # a rejected config changes nothing


def test_ssl_files_must_exist(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    ok_key = tmp_path / "key.pem"
    ok_key.write_text("x")
    srv, err = server.new({"ssl": {"default": {"cert": str(cert), "key": str(ok_key)},
                                   "hosts": {"example.com": {"cert": str(cert),
                                                             "key": str(tmp_path / "missing.pem")}}}})
    assert srv is None
    assert "example.com" in err and "missing.pem" in err


def test_configure_rejects_non_table():
    srv, _ = server.new()
    assert srv.configure(["port", 1]) == (None, "config: expected a table, got ['port', 1]")
    assert server.new(handle="not callable")[0] is None


def test_log_level_is_applied():
    srv, _ = server.new({"log_level": "error"})
    assert logging.getLogger("lilush_http").level == logging.ERROR
    srv.configure({"log_level": "debug"})
    assert logging.getLogger("lilush_http").level == logging.DEBUG
    srv.configure({"log_level": "access"})
    assert logging.getLogger("lilush_http.access").isEnabledFor(15)
    assert not logging.getLogger("lilush_http.access").isEnabledFor(10)
