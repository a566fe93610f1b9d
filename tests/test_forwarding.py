"""forwarding.py with byte strings: the PROXY protocol v1/v2 parser, trusted
proxies, and the client address taken from forwarding headers."""

import socket
import struct

import pytest

from lilush_http import config, forwarding
from lilush_http.forwarding import ProxyHeaderError, TrustedProxies, client_address, parse_proxy_header

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(command, family, payload):
    """A v2 header as the spec lays it out: signature, version 2 + command, family, length."""
    return SIG + bytes([0x20 | command, family]) + struct.pack("!H", len(payload)) + payload


def inet(src, dst, sport, dport):
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)


@pytest.mark.parametrize("line, source", [
    (b"PROXY TCP4 192.0.2.7 127.0.0.1 56324 8080\r\n", "192.0.2.7"),
    (b"PROXY TCP6 2001:db8::7 ::1 56324 443\r\n", "2001:db8::7"),
    (b"PROXY UNKNOWN\r\n", None),
    (b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", None),
])
def test_v1_lines(line, source):
    header = parse_proxy_header(line + b"GET / HTTP/1.1\r\n")
    assert header.source == source and header.size == len(line)


def test_v1_incomplete_then_complete():
    line = b"PROXY TCP4 192.0.2.7 127.0.0.1 56324 8080\r\n"
    for cut in range(1, len(line)):
        assert parse_proxy_header(line[:cut]) is None, cut
    assert parse_proxy_header(line).size == len(line)


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n\r\n",
    b"\x16\x03\x01\x02\x00",  # a TLS ClientHello without the header
    b"PROXY TCP4 192.0.2.7 127.0.0.1 56324\r\n",
    b"PROXY TCP4 2001:db8::7 127.0.0.1 1 2\r\n",
    b"PROXY TCP6 192.0.2.7 ::1 1 2\r\n",
    b"PROXY TCP4 192.0.2.7 127.0.0.1 65536 80\r\n",
    b"PROXY TCP4 192.0.2.7 127.0.0.1 080 80\r\n",
    b"PROXY UDP4 192.0.2.7 127.0.0.1 1 2\r\n",
    b"PROXY TCP4 192.0.2.7 127.0.0.1 1 2\n",
    b"PROXY TCP4 " + b"1" * 200,
    b"PROXY TCP4 192.0.2.\xff 127.0.0.1 1 2\r\n",
])
def test_v1_malformed(data):
    with pytest.raises(ProxyHeaderError):
        parse_proxy_header(data)


def test_v2_inet_inet6_and_tlvs_ignored():
    tlv = b"\x01\x00\x02h2" + b"\x04\x00\x00"  # ALPN and a NOOP
    header = v2(1, 0x11, inet("192.0.2.7", "127.0.0.1", 40000, 8080) + tlv)
    assert parse_proxy_header(header + b"\x16\x03\x01").source == "192.0.2.7"
    assert parse_proxy_header(header).size == len(header)
    six = socket.inet_pton(socket.AF_INET6, "2001:db8::7") + socket.inet_pton(socket.AF_INET6, "::1") + b"\0\1\0\2"
    assert parse_proxy_header(v2(1, 0x21, six)).source == "2001:db8::7"


def test_v2_local_unspec_and_unix_keep_the_peer():
    local = v2(0, 0x11, inet("192.0.2.7", "127.0.0.1", 1, 2))  # a health check
    assert parse_proxy_header(local).source is None
    assert parse_proxy_header(v2(1, 0x00, b"")).source is None
    assert parse_proxy_header(v2(1, 0x31, b"\0" * 216)).source is None


def test_v2_incomplete():
    header = v2(1, 0x11, inet("192.0.2.7", "127.0.0.1", 1, 2))
    for cut in range(1, len(header)):
        assert parse_proxy_header(header[:cut]) is None, cut
    assert forwarding.proxy_header_wanted(header[:16]) == len(header)
    assert forwarding.proxy_header_wanted(b"") >= forwarding.V1_MAX


@pytest.mark.parametrize("data", [
    SIG + b"\x11\x11\x00\x0c" + b"\0" * 12,  # version 1
    SIG + b"\x22\x11\x00\x0c" + b"\0" * 12,  # command 2
    v2(1, 0x11, b"\0" * 8),  # too short for two IPv4 addresses and ports
    v2(1, 0x21, b"\0" * 20),
    b"\r\n\r\n\x00\r\nQUIX\n" + b"\0" * 8,
])
def test_v2_malformed(data):
    with pytest.raises(ProxyHeaderError):
        parse_proxy_header(data)


def test_trusted_proxies_addresses_cidrs_and_star():
    trusted = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"])
    assert trusted["127.0.0.1"] and trusted["::ffff:127.0.0.1"] and trusted["10.1.2.3"]
    assert trusted["2001:db8::1"] and trusted["::ffff:10.9.9.9"] and trusted[forwarding.UNIX_PEER]
    assert not trusted["127.0.0.2"] and not trusted["11.0.0.1"] and not trusted["::1"]
    assert not trusted["not an address"]
    assert TrustedProxies(["*"])["203.0.113.9"]
    assert not TrustedProxies([])["127.0.0.1"]


def test_trusted_cache_is_bounded():
    trusted = TrustedProxies(["10.0.0.0/8"])
    for i in range(forwarding.TRUST_CACHE_SIZE * 2):
        assert not trusted["192.168.%d.%d" % (i // 256, i % 256)]
    assert len(trusted) <= forwarding.TRUST_CACHE_SIZE and trusted["10.0.0.1"]


TRUSTED = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])


@pytest.mark.parametrize("headers, client", [
    ({}, "127.0.0.1"),
    ({"x-real-ip": "203.0.113.9"}, "203.0.113.9"),
    ({"x-real-ip": "junk", "x-forwarded-for": "203.0.113.9"}, "203.0.113.9"),
    ({"x-forwarded-for": "6.6.6.6, 203.0.113.9, 10.0.0.2"}, "203.0.113.9"),
    ({"x-forwarded-for": "203.0.113.9:5555"}, "203.0.113.9"),
    ({"x-forwarded-for": "10.0.0.3, 10.0.0.2"}, "10.0.0.3"),  # all trusted: the farthest
    ({"x-forwarded-for": "6.6.6.6, unknown, 10.0.0.2"}, "10.0.0.2"),  # the walk stops at junk
    ({"x-forwarded-for": "2001:DB8::0:9, 10.0.0.2"}, "2001:db8::9"),
    ({"forwarded": 'for=6.6.6.6, for="[2001:db8::9]:4711";proto=https, for=10.0.0.2'}, "2001:db8::9"),
    ({"forwarded": "for=192.0.2.60;proto=http;by=203.0.113.43"}, "192.0.2.60"),
    ({"forwarded": "for=_hidden, for=10.0.0.2"}, "10.0.0.2"),
    ({"forwarded": "proto=https"}, "127.0.0.1"),
])
def test_client_address_from_a_trusted_peer(headers, client):
    assert client_address(headers, "127.0.0.1", TRUSTED) == client


def test_forwarded_scheme():
    assert forwarding.forwarded_scheme({"x-forwarded-proto": "HTTPS"}, "http") == "https"
    assert forwarding.forwarded_scheme({"x-forwarded-proto": "gopher"}, "http") == "http"
    assert forwarding.forwarded_scheme({}, "https") == "https"


@pytest.mark.parametrize("key, value, message", [
    ("trusted_proxies", "127.0.0.1", "trusted_proxies: expected a list"),
    ("trusted_proxies", ["127.0.0.1", "10.0.0.0/33"], "trusted_proxies: '10.0.0.0/33'"),
    ("trusted_proxies", [7], "trusted_proxies: 7"),
    ("proxy_protocol", "yes", "proxy_protocol: expected true or false"),
    ("reuse_port", 1, "reuse_port: expected true or false"),
    ("unix_socket", "", "unix_socket: expected a file path"),
    ("unix_socket_mode", "rw", "unix_socket_mode: expected an octal mode"),
    ("unix_socket_mode", 660, "unix_socket_mode: expected an octal mode"),
    ("fd", -1, "fd: expected a descriptor number"),
])
def test_config_checks(key, value, message):
    cfg = config.merge(config.defaults(), {key: value})
    assert config.validate(cfg).startswith(message)
