"""TLS live on loopback: certificates per SNI name, the handshake deadline, failed
handshakes, certificate errors in the config, rotation, and HTTP behaviour over TLS.

One trustme CA issues a default certificate ('default.test' and the IP
127.0.0.1, so ``requests`` can verify https://127.0.0.1:PORT) and host
certificates for 'alpha.test' and '*.beta.test'. Clients that need a given SNI
name use ``ssl`` + ``socket`` directly (``wrap_socket(server_hostname=...)``)
and check which certificate came back by comparing its DER bytes with the files.
"""

import gzip
import hashlib
import json
import logging
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from types import SimpleNamespace

import gevent
import pytest
import requests
import trustme

from lilush_http import server
from lilush_http.stopping import FIRST_REQUEST_GRACE
from conftest import read_response, read_to_end

OPENSSL = "/usr/bin/openssl"


# -- certificates ------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """PEM files in a temporary directory; each pair is {"cert": path, "key": path}."""
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    other_ca = trustme.CA()
    p = SimpleNamespace(dir=d, der={})

    def write(name, cert):
        cert_path, key_path = str(d / (name + ".crt")), str(d / (name + ".key"))
        cert.cert_chain_pems[0].write_to_path(cert_path)
        cert.private_key_pem.write_to_path(key_path)
        with open(cert_path) as f:
            p.der[ssl.PEM_cert_to_DER_cert(f.read())] = name
        return {"cert": cert_path, "key": key_path}

    p.default = write("default", ca.issue_cert("default.test", "127.0.0.1"))
    p.alpha = write("alpha", ca.issue_cert("alpha.test"))
    p.beta = write("beta", ca.issue_cert("*.beta.test"))
    p.rotated = write("rotated", ca.issue_cert("rotated.test", "127.0.0.1"))
    p.alpha2 = write("alpha2", ca.issue_cert("alpha.test"))
    chained = ca.create_child_ca().issue_cert("chain.test")  # leaf + intermediate in one file
    p.chain = write("chain", chained)
    with open(p.chain["cert"], "wb") as f:
        f.write(b"".join(blob.bytes() for blob in chained.cert_chain_pems))
    p.ca = str(d / "ca.pem")
    ca.cert_pem.write_to_path(p.ca)
    p.other_ca = str(d / "other-ca.pem")
    other_ca.cert_pem.write_to_path(p.other_ca)
    p.ssl = {"default": p.default, "hosts": {"alpha.test": p.alpha, "*.beta.test": p.beta}}
    return p


# -- helpers -----------------------------------------------------------------------

def sni_echo(method, query, args, headers, body, ctx):
    """Answers with what the handler saw of the connection, as JSON."""
    seen = {"sni": ctx["sni"], "count": ctx["count"], "query": query, "args": args, "method": method,
            "body_len": len(body) if body is not None else None,
            "body_sha": hashlib.sha256(body).hexdigest() if body is not None else None,
            "te": headers.get("transfer-encoding")}
    return json.dumps(seen), 200, {"content-type": "application/json"}


def tls_connect(live, name=None, cafile=None, timeout=5, context=None):
    """A verified TLS connection; ``name`` is sent as SNI (None: no SNI). The
    hostname check is left to the tests, which compare the certificate itself."""
    if context is None:
        context = ssl.create_default_context(cafile=cafile)
        context.check_hostname = False
    raw = socket.create_connection((live.host, live.port), timeout=timeout)
    try:
        return context.wrap_socket(raw, server_hostname=name)
    except BaseException:
        raw.close()
        raise


def served(pki, sock):
    """Which of our certificate files the server presented on ``sock``."""
    return pki.der.get(sock.getpeercert(binary_form=True), "unknown certificate")


def dns_names(sock):
    return sorted(value for kind, value in sock.getpeercert()["subjectAltName"] if kind == "DNS")


def get(sock, reader, path="/", host="h", extra=""):
    sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path, host, extra)).encode("ascii"))
    return read_response(reader)


def get_json(sock, reader, path="/"):
    status, headers, body = get(sock, reader, path)
    assert status == 200, body
    return json.loads(body)


def client_hello():
    """The bytes of a real ClientHello (for SNI alpha.test)."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context.wrap_bio(incoming, outgoing, server_hostname="alpha.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16" and len(hello) > 100
    return hello


def s_client(live, *args, stdin=b""):
    """Run ``openssl s_client`` against the live server: (returncode, stdout, stderr)."""
    done = subprocess.run([OPENSSL, "s_client", "-connect", "%s:%d" % (live.host, live.port)] + list(args),
                          input=stdin, capture_output=True, timeout=15)
    return done.returncode, done.stdout.decode("latin-1"), done.stderr.decode("latin-1")


def pem_in(output):
    match = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", output, re.S)
    assert match, output
    return ssl.PEM_cert_to_DER_cert(match.group(0))


@pytest.fixture
def tls_server(live_server, pki):
    def start(handle=sni_echo, **config):
        config.setdefault("ssl", pki.ssl)
        config.setdefault("log_level", "debug")
        return live_server(handle, **config)
    return start


# -- certificates chosen by SNI ------------------------------------------------------

@pytest.mark.parametrize("name, expected, dns", [
    ("alpha.test", "alpha", ["alpha.test"]),
    ("one.beta.test", "beta", ["*.beta.test"]),
    ("default.test", "default", ["default.test"]),
])
def test_each_host_gets_its_certificate(tls_server, pki, name, expected, dns):
    live = tls_server()
    context = ssl.create_default_context(cafile=pki.ca)  # full verification, hostname included
    with tls_connect(live, name, context=context) as sock:
        assert served(pki, sock) == expected
        assert dns_names(sock) == dns
        assert sock.selected_alpn_protocol() is None  # the client offered none
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        with sock.makefile("rb") as reader:
            seen = get_json(sock, reader, "/who")
    assert seen["sni"] == name and seen["query"] == "/who"


@pytest.mark.parametrize("name, expected, sni", [
    (None, "default", None),                       # no SNI at all
    ("unknown.test", "default", "unknown.test"),   # a name no host has
    ("ALPHA.TEST", "alpha", "alpha.test"),         # names are case-insensitive
    ("Alpha.Test", "alpha", "alpha.test"),
    ("ONE.Beta.TEST", "beta", "one.beta.test"),
    ("x.y.beta.test", "default", "x.y.beta.test"),  # the wildcard matches exactly one label
    ("beta.test", "default", "beta.test"),          # ... and not the bare parent
    ("alpha.test.example", "default", "alpha.test.example"),
    ("xalpha.test", "default", "xalpha.test"),
])
def test_sni_selection_and_ctx_sni(tls_server, pki, name, expected, sni):
    live = tls_server()
    with tls_connect(live, name, cafile=pki.ca) as sock:
        assert served(pki, sock) == expected
        with sock.makefile("rb") as reader:
            seen = get_json(sock, reader)
    assert seen["sni"] == sni


def test_requests_over_https_verifies_default_certificate(tls_server, pki):
    live = tls_server()
    url = "https://%s:%d/hello?x=1" % (live.host, live.port)
    response = requests.get(url, verify=pki.ca, timeout=5)
    assert response.status_code == 200
    seen = response.json()
    assert seen["query"] == "/hello" and seen["args"] in ("x=1", {"x": "1"}) and seen["count"] == 1
    assert seen["sni"] is None  # no SNI is sent for an IP address
    # The same server refuses verification with another CA's trust store.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, verify=pki.other_ca, timeout=5)


# -- openssl s_client -----------------------------------------------------------------

def test_openssl_s_client_sees_host_certificate(tls_server, pki):
    live = tls_server()
    code, out, err = s_client(live, "-servername", "alpha.test", "-CAfile", pki.ca)
    assert code == 0, err
    assert pki.der[pem_in(out)] == "alpha"
    assert "Verify return code: 0 (ok)" in out
    assert "No ALPN negotiated" in out
    code, out, err = s_client(live, "-servername", "nothing.test", "-CAfile", pki.ca)
    assert code == 0, err
    assert pki.der[pem_in(out)] == "default"


def test_openssl_s_client_alpn_http11(tls_server, pki):
    live = tls_server()
    code, out, err = s_client(live, "-servername", "one.beta.test", "-CAfile", pki.ca, "-alpn", "http/1.1")
    assert code == 0, err
    assert "ALPN protocol: http/1.1" in out
    assert pki.der[pem_in(out)] == "beta"
    # A client offering h2 too gets h2 (HTTP/2 is on by default) ...
    code, out, err = s_client(live, "-servername", "alpha.test", "-CAfile", pki.ca, "-alpn", "h2,http/1.1")
    assert code == 0, err
    assert "ALPN protocol: h2" in out


def test_openssl_s_client_alpn_without_http2(tls_server, pki):
    """... and http/1.1 when http2 is off: h2 is not offered at all."""
    live = tls_server(http2=False)
    code, out, err = s_client(live, "-servername", "alpha.test", "-CAfile", pki.ca, "-alpn", "h2,http/1.1")
    assert code == 0, err
    assert "ALPN protocol: http/1.1" in out
    code, out, err = s_client(live, "-servername", "alpha.test", "-CAfile", pki.ca, "-alpn", "h2")
    assert "ALPN protocol: h2" not in out


def test_openssl_s_client_request_with_uppercase_sni(tls_server, pki):
    live = tls_server()
    request = b"GET /via-openssl HTTP/1.1\r\nHost: alpha.test\r\nConnection: close\r\n\r\n"
    code, out, err = s_client(live, "-servername", "ALPHA.TEST", "-CAfile", pki.ca, "-ign_eof", stdin=request)
    assert pki.der[pem_in(out)] == "alpha"
    assert "HTTP/1.1 200 OK" in out
    body, _ = json.JSONDecoder().raw_decode(out, out.index('{"sni"'))
    assert body["sni"] == "alpha.test" and body["query"] == "/via-openssl"


def test_openssl_tls11_is_refused(tls_server, pki):
    live = tls_server()
    probe = subprocess.run([OPENSSL, "s_client", "-help"], capture_output=True, timeout=10)
    if b"-tls1_1" not in probe.stdout + probe.stderr:
        pytest.skip("the local openssl has no -tls1_1")
    code, out, err = s_client(live, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-servername", "alpha.test")
    assert code != 0
    assert "BEGIN CERTIFICATE" not in out
    assert "alert protocol version" in err  # refused by the server, not by the client itself
    # TLS 1.2 is accepted.
    code, out, err = s_client(live, "-tls1_2", "-servername", "alpha.test", "-CAfile", pki.ca)
    assert code == 0, err
    assert "Protocol  : TLSv1.2" in out


def test_python_tls11_client_is_refused(tls_server, pki):
    live = tls_server()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki.ca)
    context.check_hostname = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is deprecated: that is the point
            context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError) as exc:
        pytest.skip("TLS 1.1 cannot be configured here: %s" % exc)
    with pytest.raises(ssl.SSLError) as info:
        tls_connect(live, "alpha.test", context=context)
    assert "PROTOCOL_VERSION" in str(info.value)  # the server's alert
    with tls_connect(live, "alpha.test", cafile=pki.ca) as sock, sock.makefile("rb") as reader:
        assert get_json(sock, reader)["sni"] == "alpha.test"


# -- the handshake deadline ------------------------------------------------------------

def test_silent_client_is_closed_at_handshake_deadline(tls_server):
    live = tls_server(tls_handshake_timeout=0.5)
    with live.connect() as sock:
        started = time.monotonic()
        data, closed = read_to_end(sock, 5)
        elapsed = time.monotonic() - started
    assert closed and data == b""
    assert 0.4 <= elapsed < 3


@pytest.mark.parametrize("partial", ["hello", "record-header"])
def test_half_client_hello_is_closed_at_handshake_deadline(tls_server, partial):
    live = tls_server(tls_handshake_timeout=0.5)
    data = client_hello()[:20] if partial == "hello" else b"\x16\x03\x01\x02\x00" + b"\x01\x00\x01\xfc"
    with live.connect() as sock:
        started = time.monotonic()
        sock.sendall(data)
        data, closed = read_to_end(sock, 5)
        elapsed = time.monotonic() - started
    assert closed and data == b""
    assert 0.4 <= elapsed < 3


def test_trickling_client_hello_is_cut_by_one_deadline(tls_server):
    """The deadline covers the whole handshake, not each read."""
    live = tls_server(tls_handshake_timeout=0.8)
    hello = client_hello()
    with live.connect() as sock:
        started = time.monotonic()
        closed = False
        for byte in hello[:-1]:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            data, closed = read_to_end(sock, 0.1)
            if closed:
                break
            assert time.monotonic() - started < 4
        elapsed = time.monotonic() - started
    assert closed
    assert 0.6 <= elapsed < 3


def test_silent_clients_free_their_slots_at_the_deadline(tls_server, pki):
    # min_rate 0: no slow-client cutting (test_admission.py has the cut of a handshake flood)
    live = tls_server(tls_handshake_timeout=0.5, connection_limit=2, min_rate=0)
    silent = [live.connect(), live.connect()]
    try:
        started = time.monotonic()
        with tls_connect(live, "alpha.test", cafile=pki.ca) as sock, sock.makefile("rb") as reader:
            assert served(pki, sock) == "alpha"
            seen = get_json(sock, reader, "/third")
        elapsed = time.monotonic() - started
        assert seen["query"] == "/third"
        assert 0.35 <= elapsed < 3  # it waited for the two slots, and got one at their deadline
        for sock in silent:
            data, closed = read_to_end(sock, 2)
            assert closed and data == b""
    finally:
        for sock in silent:
            sock.close()


def test_completed_handshake_is_not_cut_by_handshake_timeout(tls_server, pki):
    """After the handshake, the idle keep-alive timeout applies, not tls_handshake_timeout."""
    live = tls_server(tls_handshake_timeout=0.3, keepalive_idle_timeout=5)
    with tls_connect(live, "alpha.test", cafile=pki.ca) as sock, sock.makefile("rb") as reader:
        assert get_json(sock, reader)["count"] == 1
        sock.settimeout(0.8)
        with pytest.raises(socket.timeout):  # nothing, not even a close, during 0.8 s of idling
            sock.recv(1)
        sock.settimeout(5)
        assert get_json(sock, reader)["count"] == 2


# -- failed handshakes ---------------------------------------------------------------------

def test_plain_http_on_tls_port_gets_400(tls_server, pki):
    live = tls_server()
    with tls_connect(live, "alpha.test", cafile=pki.ca) as tls_sock, tls_sock.makefile("rb") as reader:
        assert get_json(tls_sock, reader)["count"] == 1
        with live.connect() as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, headers, body = read_response(plain)
            assert status == 400
            assert headers["connection"] == "close"
            assert headers["content-type"].startswith("text/plain")
            assert b"Plain HTTP request sent to a TLS port" in body
            # While that connection is still open, TLS clients are served.
            assert get_json(tls_sock, reader)["count"] == 2
            with tls_connect(live, "one.beta.test", cafile=pki.ca) as other, other.makefile("rb") as r2:
                assert served(pki, other) == "beta"
                assert get_json(other, r2)["sni"] == "one.beta.test"
            data, closed = read_to_end(plain, 3)
            assert closed and data == b""


@pytest.mark.parametrize("request_line", [b"POST /form HTTP/1.1", b"PUT /x HTTP/1.1", b"HEAD / HTTP/1.0"])
def test_plain_http_other_methods_get_400(tls_server, request_line):
    live = tls_server()
    with live.connect() as plain:
        plain.sendall(request_line + b"\r\nHost: h\r\nContent-Length: 2\r\n\r\nab")
        data, closed = read_to_end(plain, 5)
    assert closed
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"Plain HTTP request sent to a TLS port" in data


def test_plain_http_via_requests_gets_400(tls_server):
    live = tls_server()
    response = requests.get("http://%s:%d/" % (live.host, live.port), timeout=5)
    assert response.status_code == 400
    assert "Plain HTTP request sent to a TLS port" in response.text


def test_client_rejecting_certificate_does_not_disturb_server(tls_server, pki, caplog):
    live = tls_server()
    with tls_connect(live, "alpha.test", cafile=pki.ca) as kept, kept.makefile("rb") as reader:
        assert get_json(kept, reader)["count"] == 1
        with caplog.at_level(logging.DEBUG, logger="lilush_http"):
            with pytest.raises(ssl.SSLCertVerificationError):
                tls_connect(live, "alpha.test", cafile=pki.other_ca)
            # Server side: the failure is logged at debug (wait for the server's greenlet).
            deadline = time.monotonic() + 3
            while not any("TLS handshake failed" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
                time.sleep(0.02)
        failed = [r for r in caplog.records if "TLS handshake failed" in r.getMessage()]
        assert all(r.levelno == logging.DEBUG for r in failed)
        assert get_json(kept, reader)["count"] == 2
    with tls_connect(live, "alpha.test", cafile=pki.ca) as sock, sock.makefile("rb") as reader:
        assert get_json(sock, reader)["sni"] == "alpha.test"


def test_garbage_and_aborted_handshakes_do_not_disturb_others(tls_server, pki):
    live = tls_server()
    with tls_connect(live, "alpha.test", cafile=pki.ca) as kept, kept.makefile("rb") as reader:
        assert get_json(kept, reader)["count"] == 1
        with live.connect() as junk:  # not TLS, not HTTP
            junk.sendall(b"\x00\x01\x02 not a client hello " * 8)
            data, closed = read_to_end(junk, 3)
            assert closed and b"HTTP/1.1" not in data
        with live.connect() as aborted:  # a ClientHello, then gone
            aborted.sendall(client_hello())
        with live.connect() as reset:  # a reset in the middle of the handshake
            reset.sendall(client_hello()[:30])
            reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        assert get_json(kept, reader)["count"] == 2
    with tls_connect(live, "x.beta.test", cafile=pki.ca) as sock, sock.makefile("rb") as reader:
        assert served(pki, sock) == "beta"
        assert get_json(sock, reader)["count"] == 1


# -- certificate errors in the config ---------------------------------------------------------

def _bad(path, content):
    with open(path, "wb") as f:
        f.write(content)
    return str(path)


@pytest.fixture
def bad_files(tmp_path, pki):
    garbage = _bad(tmp_path / "garbage.pem", bytes(range(256)) * 4)
    text = _bad(tmp_path / "text.pem", b"this is not a certificate\n")
    return SimpleNamespace(missing=str(tmp_path / "missing.crt"), garbage=garbage, text=text)


def _errors(pki, bad):
    """(ssl config, words the error must contain)."""
    return [
        ({"default": {"cert": bad.missing, "key": pki.default["key"]}}, ["ssl.default", bad.missing]),
        ({"default": {"cert": pki.default["cert"], "key": bad.missing}}, ["ssl.default", bad.missing]),
        ({"default": pki.default, "hosts": {"alpha.test": {"cert": bad.missing, "key": pki.alpha["key"]}}},
         ["alpha.test", bad.missing]),
        ({"default": {"cert": bad.garbage, "key": pki.default["key"]}}, ["ssl.default", bad.garbage]),
        ({"default": {"cert": bad.text, "key": pki.default["key"]}}, ["ssl.default", bad.text]),
        ({"default": {"cert": pki.default["cert"], "key": bad.garbage}}, ["ssl.default", bad.garbage]),
        ({"default": pki.default, "hosts": {"*.beta.test": {"cert": pki.beta["cert"], "key": bad.text}}},
         ["*.beta.test", bad.text]),
        ({"default": {"cert": pki.default["cert"], "key": pki.alpha["key"]}},
         ["ssl.default", "does not match", pki.alpha["key"], pki.default["cert"]]),
        ({"default": pki.default, "hosts": {"alpha.test": {"cert": pki.alpha["cert"], "key": pki.beta["key"]}}},
         ["alpha.test", "does not match", pki.beta["key"]]),
        ({"hosts": {"alpha.test": pki.alpha}}, ["ssl.default"]),
        ({"default": pki.default, "hosts": {"alpha.test": "alpha.crt"}}, ["alpha.test"]),
        ({"default": pki.default, "hosts": {"alpha.test": {"cert": pki.alpha["cert"]}}}, ["alpha.test", "key"]),
        ({"default": pki.default, "hosts": ["alpha.test"]}, ["ssl.hosts"]),
        ({"default": pki.default, "other": {}}, ["other"]),
    ]


def test_bad_certificate_files_rejected_by_new(pki, bad_files):
    for ssl_config, words in _errors(pki, bad_files):
        srv, err = server.new({"ssl": ssl_config, "port": 0})
        assert srv is None, ssl_config
        assert isinstance(err, str)
        for word in words:
            assert word in err, (ssl_config, err)


def test_bad_certificate_files_rejected_by_configure_on_running_server(tls_server, pki, bad_files):
    live = tls_server()
    before = json.dumps(live.srv.cfg["ssl"], sort_keys=True)
    for ssl_config, words in _errors(pki, bad_files):
        hosts = ssl_config.get("hosts") or {}
        pairs = [ssl_config.get("default")] + (list(hosts.values()) if isinstance(hosts, dict) else [])
        if not all(isinstance(p, dict) and {"cert", "key"} <= set(p) for p in pairs):
            continue  # merged into the running config, a missing part would be kept from before
        ok, err = live.srv.configure({"ssl": ssl_config})
        assert ok is None, ssl_config
        for word in words:
            assert word in err, (ssl_config, err)
        assert json.dumps(live.srv.cfg["ssl"], sort_keys=True) == before
    # A config whose default is good but whose host is bad changes nothing at all.
    ok, err = live.srv.configure({"ssl": {"default": pki.rotated,
                                          "hosts": {"alpha.test": {"cert": pki.alpha2["cert"],
                                                                   "key": pki.alpha["key"]}}}})
    assert ok is None and "alpha.test" in err and "does not match" in err
    for name, expected in [(None, "default"), ("alpha.test", "alpha"), ("one.beta.test", "beta")]:
        with tls_connect(live, name, cafile=pki.ca) as sock, sock.makefile("rb") as reader:
            assert served(pki, sock) == expected
            assert get_json(sock, reader)["count"] == 1


def test_host_names_must_be_strings(pki):
    for name in (1, None, "", "*"):
        srv, err = server.new({"ssl": {"default": pki.default, "hosts": {name: pki.alpha}}, "port": 0})
        assert srv is None and "ssl.hosts" in err and repr(name) in err


@pytest.fixture
def encrypted_key(tmp_path, pki):
    from cryptography.hazmat.primitives import serialization
    with open(pki.default["key"], "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    path = tmp_path / "protected.key"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"secret")))
    return str(path)


def test_encrypted_key_is_an_error(pki, encrypted_key):
    srv, err = server.new({"ssl": {"default": {"cert": pki.default["cert"], "key": encrypted_key}}, "port": 0})
    assert srv is None
    assert "ssl.default" in err and encrypted_key in err
    assert "encrypted" in err.replace(encrypted_key, "")  # (the tmp path holds the test's name)


def test_encrypted_key_does_not_prompt_on_terminal(pki, encrypted_key):
    """With a controlling terminal, OpenSSL would ask for the passphrase there and block."""
    import pty
    import select
    script = ("import sys; sys.path.insert(0, %r)\n"
              "from lilush_http import server\n"
              "print('RESULT', server.new({'port': 0, 'ssl': {'default': {'cert': %r, 'key': %r}}}), flush=True)\n"
              % (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), pki.default["cert"], encrypted_key))
    pid, fd = pty.fork()
    if pid == 0:  # the child: run the script with the pty as its controlling terminal
        try:
            os.execv(sys.executable, [sys.executable, "-c", script])
        finally:
            os._exit(127)
    output = b""
    deadline = time.monotonic() + 10
    try:
        while b"RESULT" not in output or not output.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or b"pass phrase" in output:
                break
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                break
            try:
                piece = os.read(fd, 4096)
            except OSError:
                break
            if not piece:
                break
            output += piece
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.close(fd)
    assert b"pass phrase" not in output, output
    assert b"RESULT (None, " in output and b"is encrypted" in output, output


def test_certificate_chain_file_is_sent_whole(live_server, pki):
    config = {"default": pki.default, "hosts": {"chain.test": pki.chain}}
    live = live_server(sni_echo, ssl=config)
    context = ssl.create_default_context(cafile=pki.ca)  # knows the root only, not the intermediate
    with tls_connect(live, "chain.test", context=context) as sock, sock.makefile("rb") as reader:
        assert served(pki, sock) == "chain"
        assert get_json(sock, reader)["sni"] == "chain.test"


def test_good_config_builds_contexts(pki):
    srv, err = server.new({"ssl": pki.ssl, "port": 0})
    assert err is None and srv is not None
    certificates = srv.settings.certificates
    assert certificates.context_for("ALPHA.test") is certificates.hosts["alpha.test"]
    assert certificates.context_for("a.beta.test") is certificates.wildcards[".beta.test"]
    assert certificates.context_for("a.b.beta.test") is certificates.default
    assert certificates.context_for(None) is certificates.default
    assert certificates.default.minimum_version == ssl.TLSVersion.TLSv1_2
    srv, err = server.new({"port": 0})
    assert err is None and srv.settings.certificates is None


# -- certificate rotation ---------------------------------------------------------------------

def test_rotation_applies_to_new_connections_only(tls_server, pki):
    live = tls_server(keepalive_idle_timeout=10)
    old = tls_connect(live, None, cafile=pki.ca)
    old_alpha = tls_connect(live, "alpha.test", cafile=pki.ca)
    with old, old_alpha, old.makefile("rb") as old_reader, old_alpha.makefile("rb") as alpha_reader:
        assert served(pki, old) == "default"
        assert get_json(old, old_reader)["count"] == 1
        assert get_json(old_alpha, alpha_reader)["count"] == 1

        ok, err = live.srv.configure({"ssl": {"default": pki.rotated, "hosts": {"alpha.test": pki.alpha2}}})
        assert (ok, err) == (True, None)

        with tls_connect(live, None, cafile=pki.ca) as new, new.makefile("rb") as reader:
            assert served(pki, new) == "rotated"
            assert dns_names(new) == ["rotated.test"]
            assert get_json(new, reader)["count"] == 1
        with tls_connect(live, "alpha.test", cafile=pki.ca) as new, new.makefile("rb") as reader:
            assert served(pki, new) == "alpha2"
            assert get_json(new, reader)["sni"] == "alpha.test"
        with tls_connect(live, "one.beta.test", cafile=pki.ca) as new:  # kept by the merge
            assert served(pki, new) == "beta"
        response = requests.get("https://%s:%d/" % (live.host, live.port), verify=pki.ca, timeout=5)
        assert response.status_code == 200 and response.json()["count"] == 1

        # The connections opened before keep going, on their old certificates.
        assert get_json(old, old_reader)["count"] == 2
        assert get_json(old_alpha, alpha_reader)["count"] == 2
        assert served(pki, old) == "default"
        assert served(pki, old_alpha) == "alpha"


# -- HTTP over TLS ---------------------------------------------------------------------------

def test_keepalive_over_tls_raw(tls_server, pki):
    live = tls_server()
    with tls_connect(live, "alpha.test", cafile=pki.ca) as sock, sock.makefile("rb") as reader:
        counts = [get_json(sock, reader, "/%d" % i)["count"] for i in range(4)]
    assert counts == [1, 2, 3, 4]


def test_keepalive_over_tls_requests_session(tls_server, pki):
    live = tls_server()
    base = "https://%s:%d" % (live.host, live.port)
    with requests.Session() as session:  # (verify per call: REQUESTS_CA_BUNDLE would override session.verify)
        counts = [session.get(base + "/k", verify=pki.ca, timeout=5).json()["count"] for _ in range(3)]
    assert counts == [1, 2, 3]


def test_pipelining_over_tls(tls_server, pki):
    live = tls_server()
    with tls_connect(live, "one.beta.test", cafile=pki.ca) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"".join(b"GET /p%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(5))
                     + b"POST /p5 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
        seen = []
        for _ in range(6):
            status, headers, body = read_response(reader)
            assert status == 200
            seen.append(json.loads(body))
    assert [s["query"] for s in seen] == ["/p%d" % i for i in range(6)]
    assert [s["count"] for s in seen] == [1, 2, 3, 4, 5, 6]
    assert seen[5]["body_len"] == 3 and seen[5]["method"] == "POST"


def test_chunked_request_body_over_tls(tls_server, pki):
    live = tls_server()
    pieces = [os.urandom(size) for size in (1, 1000, 70000, 16384, 5)]
    response = requests.post("https://%s:%d/up" % (live.host, live.port), data=iter(pieces),
                             verify=pki.ca, timeout=10)
    assert response.status_code == 200
    seen = response.json()
    assert seen["te"] == "chunked"
    whole = b"".join(pieces)
    assert seen["body_len"] == len(whole)
    assert seen["body_sha"] == hashlib.sha256(whole).hexdigest()


def test_chunked_request_body_over_tls_raw(tls_server, pki):
    live = tls_server()
    with tls_connect(live, "alpha.test", cafile=pki.ca) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b"5\r\nhello\r\n")
        sock.sendall(b"6\r\n world\r\n0\r\n\r\n")
        status, headers, body = read_response(reader)
        assert status == 200
        seen = json.loads(body)
        assert seen["body_len"] == 11 and seen["body_sha"] == hashlib.sha256(b"hello world").hexdigest()
        assert get_json(sock, reader)["count"] == 2


def test_large_request_body_and_expect_continue_over_tls(tls_server, pki):
    live = tls_server()
    data = os.urandom(1024 * 1024 + 7)
    with tls_connect(live, "alpha.test", cafile=pki.ca) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
        status, headers, body = read_response(reader)
        assert status == 200
        seen = json.loads(body)
        assert seen["body_len"] == len(data) and seen["body_sha"] == hashlib.sha256(data).hexdigest()
        sock.sendall(b"POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert reader.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert reader.readline() == b"\r\n"
        sock.sendall(b"hello")
        status, headers, body = read_response(reader)
        assert status == 200 and json.loads(body)["count"] == 2
        assert json.loads(body)["body_sha"] == hashlib.sha256(b"hello").hexdigest()


def test_gzip_response_over_tls(tls_server, pki):
    text = "lilush over TLS, line %d\n"
    content = "".join(text % i for i in range(3000))

    def handle(method, query, args, headers, body, ctx):
        return content, 200, {"content-type": "text/plain"}
    live = tls_server(handle)
    url = "https://%s:%d/big.txt" % (live.host, live.port)
    response = requests.get(url, verify=pki.ca, headers={"Accept-Encoding": "gzip"}, timeout=5)
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.text == content
    # The bytes on the wire really are gzip, and much smaller.
    with tls_connect(live, "alpha.test", cafile=pki.ca) as sock, sock.makefile("rb") as reader:
        status, headers, body = get(sock, reader, extra="Accept-Encoding: gzip\r\n")
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert len(body) < len(content) // 4
    assert gzip.decompress(body).decode() == content


def test_streamed_response_over_tls(tls_server, pki):
    first_seen = threading.Event()
    finished = []

    def handle(method, query, args, headers, body, ctx):
        def pieces():
            yield "first;"
            for _ in range(500):  # wait (cooperatively) until the client has the first piece
                if first_seen.is_set():
                    break
                gevent.sleep(0.01)
            yield "second;"
            yield b"third"
            finished.append(True)
        return pieces(), 200, {"content-type": "application/octet-stream"}
    live = tls_server(handle)
    with tls_connect(live, "alpha.test", cafile=pki.ca) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += reader.readline()
        assert b"transfer-encoding: chunked" in head.lower()
        size = int(reader.readline(), 16)
        assert reader.read(size) == b"first;"
        assert reader.read(2) == b"\r\n"
        assert not finished  # the first piece came while the generator was still running
        first_seen.set()
        rest = b""
        while True:
            size = int(reader.readline(), 16)
            if size == 0:
                assert reader.readline() == b"\r\n"
                break
            rest += reader.read(size)
            assert reader.read(2) == b"\r\n"
        assert rest == b"second;third"
        assert get(sock, reader)[0] == 200  # the connection is still in sync
    # And through requests.
    first_seen.set()
    response = requests.get("https://%s:%d/s" % (live.host, live.port), verify=pki.ca, timeout=5)
    assert response.status_code == 200 and response.content == b"first;second;third"
    assert response.headers["transfer-encoding"] == "chunked"


def test_large_file_response_over_tls(tls_server, pki, tmp_path):
    data = os.urandom(2 * 1024 * 1024 + 123)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    opened = []

    def handle(method, query, args, headers, body, ctx):
        f = open(path, "rb")
        opened.append(f)
        return f, 200, {"content-type": "application/octet-stream"}
    live = tls_server(handle)
    response = requests.get("https://%s:%d/big.bin" % (live.host, live.port), verify=pki.ca, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(data))
    assert "content-encoding" not in response.headers
    assert hashlib.sha256(response.content).hexdigest() == hashlib.sha256(data).hexdigest()
    # Raw, with SNI and keep-alive: two files in a row on one TLS connection.
    with tls_connect(live, "one.beta.test", cafile=pki.ca, timeout=10) as sock, sock.makefile("rb") as reader:
        for _ in range(2):
            status, headers, body = get(sock, reader, "/big.bin")
            assert status == 200 and body == data
        assert get(sock, reader)[0] == 200
    deadline = time.monotonic() + 3
    while not all(f.closed for f in opened):
        assert time.monotonic() < deadline, "the server did not close the response files"
        time.sleep(0.02)
    assert len(opened) == 4


def test_file_response_with_offset_over_tls(tls_server, pki, tmp_path):
    data = os.urandom(300000)
    path = tmp_path / "part.bin"
    path.write_bytes(data)

    def handle(method, query, args, headers, body, ctx):
        f = open(path, "rb")
        f.seek(1000)
        return f, 200, {"content-type": "application/octet-stream"}
    live = tls_server(handle)
    with tls_connect(live, "alpha.test", cafile=pki.ca) as sock, sock.makefile("rb") as reader:
        status, headers, body = get(sock, reader)
    assert status == 200 and headers["content-length"] == str(len(data) - 1000)
    assert body == data[1000:]


# -- closing idle TLS connections ----------------------------------------------------------

def test_idle_tls_connection_evicted_for_waiting_client_closes_cleanly(tls_server, pki):
    """With every slot taken, the idle keep-alive connection is closed for a new client;
    its TLS client sees a plain end of stream, not a TLS alert."""
    live = tls_server(connection_limit=1, keepalive_idle_timeout=10)
    with tls_connect(live, "alpha.test", cafile=pki.ca) as idle, idle.makefile("rb") as reader:
        assert get_json(idle, reader)["count"] == 1
        started = time.monotonic()
        with tls_connect(live, "one.beta.test", cafile=pki.ca) as new, new.makefile("rb") as r2:
            assert get_json(new, r2)["sni"] == "one.beta.test"
        assert time.monotonic() - started < 3
        idle.settimeout(3)
        assert idle.recv(100) == b""  # no ssl.SSLError (a decode_error alert before the fix)


def test_idle_tls_connection_closed_cleanly_by_stop(tls_server, pki):
    live = tls_server(keepalive_idle_timeout=10)
    with tls_connect(live, "alpha.test", cafile=pki.ca) as idle, idle.makefile("rb") as reader:
        assert get_json(idle, reader)["count"] == 1
        started = time.monotonic()
        live.srv.stop(3)
        assert time.monotonic() - started < 1
        idle.settimeout(3)
        assert idle.recv(100) == b""


def test_keepalive_timeout_over_tls(tls_server, pki):
    live = tls_server(keepalive_idle_timeout=0.5)
    with tls_connect(live, "alpha.test", cafile=pki.ca) as sock, sock.makefile("rb") as reader:
        assert get_json(sock, reader)["count"] == 1
        started = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(100) == b""
        assert 0.4 <= time.monotonic() - started < 3


# -- stopping -------------------------------------------------------------------------------

def test_stop_does_not_wait_for_clients_in_handshake(tls_server, pki):
    live = tls_server()  # tls_handshake_timeout: the default 10 s
    with live.connect() as silent:
        silent.sendall(client_hello()[:20])
        # Connections are accepted in order: once this one is served, the silent one is held too.
        with tls_connect(live, "alpha.test", cafile=pki.ca) as idle, idle.makefile("rb") as reader:
            assert get_json(idle, reader)["count"] == 1  # an idle keep-alive TLS connection
            started = time.monotonic()
            live.srv.stop(3)
            elapsed = time.monotonic() - started
            idle.settimeout(1)
            assert idle.recv(100) == b""
        data, closed = read_to_end(silent, 1)
        assert closed and data == b""
    # Not the 10 s handshake timeout: a handshake just begun gets what a just-accepted plain
    # connection gets to send its request (FIRST_REQUEST_GRACE), then it is cut.
    assert elapsed < FIRST_REQUEST_GRACE + 0.5


class _SlowSend:
    """Wraps the server's async watcher: send() wakes the server thread, then the
    calling thread is held back, as a preempted thread would be."""

    def __init__(self, watcher):
        self._watcher = watcher

    def send(self):
        self._watcher.send()
        time.sleep(0.5)

    def __getattr__(self, name):
        return getattr(self._watcher, name)


def test_stop_from_another_thread_survives_a_fast_server(live_server):
    live = live_server()
    live.srv._remote_stop.wakeup = _SlowSend(live.srv._remote_stop.wakeup)
    live.srv.stop(2)  # raises TypeError before the fix
    live.thread.join(3)
    assert not live.thread.is_alive()


# -- cipher suites (issue 21) ---------------------------------------------------------------------

CBC_ONLY = ("ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:"
            "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA")


def tls12_client(ciphers):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    return context


def test_tls12_offers_aead_suites_only_by_default(tls_server):
    live = tls_server()
    with pytest.raises(ssl.SSLError):
        tls_connect(live, "alpha.test", context=tls12_client(CBC_ONLY)).close()
    with tls_connect(live, "alpha.test", context=tls12_client("ALL")) as sock:
        name, version, _ = sock.cipher()
        assert version == "TLSv1.2" and ("GCM" in name or "CHACHA20" in name), name


def test_tls_ciphers_setting_widens_the_suites(tls_server):
    live = tls_server(tls_ciphers="HIGH:!aNULL")
    with tls_connect(live, "alpha.test", context=tls12_client(CBC_ONLY)) as sock:
        assert "GCM" not in sock.cipher()[0] and sock.cipher()[1] == "TLSv1.2"


def test_bad_tls_ciphers_is_refused(pki):
    srv, err = server.new({"ssl": pki.ssl, "tls_ciphers": "NOTHING-LIKE-THIS"})
    assert srv is None and err.startswith("tls_ciphers: ")
