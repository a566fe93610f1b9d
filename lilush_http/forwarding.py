"""Where a request really comes from: the PROXY protocol header (v1 and v2) a
load balancer puts before the bytes of a connection, and the forwarding headers
(X-Real-IP, X-Forwarded-For, Forwarded) believed only from trusted proxies.

Sans-I/O: ``parse_proxy_header`` takes bytes; the server does the reading.
"""

import ipaddress
import socket
import struct

# A peer connected over a unix socket has no address; nginx calls it "unix:" too.
UNIX_PEER = "unix:"

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included (the spec's figure)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version and command, family, length
TRUST_CACHE_SIZE = 4096


class ProxyHeaderError(Exception):
    """The bytes are not a valid PROXY protocol header; the connection is closed."""


class ProxyHeader:
    """A complete PROXY header: ``source`` is the client's address (str), or None
    to keep the peer's (v1 UNKNOWN, v2 LOCAL, an unspecified or unix family);
    ``size`` is the header's length in bytes."""

    __slots__ = ("source", "size")

    def __init__(self, source, size):
        self.source = source
        self.size = size

    def __repr__(self):
        return "ProxyHeader(%r, %d)" % (self.source, self.size)


def proxy_header_wanted(data):
    """How many bytes to look at to get the whole header that ``data`` starts:
    the v2 header's exact size once its length is known, else enough for v1."""
    if len(data) >= V2_FIXED and data.startswith(V2_SIGNATURE):
        return V2_FIXED + struct.unpack_from("!H", data, 14)[0]
    return max(V1_MAX, V2_FIXED)


def parse_proxy_header(data):
    """The ProxyHeader that ``data`` starts with, or None when more bytes are
    needed; raises ProxyHeaderError when it cannot be one."""
    if data[:len(V2_SIGNATURE)] == V2_SIGNATURE[:len(data)] and data[:1] == b"\r":
        return _parse_v2(data)
    if data[:len(V1_PREFIX)] == V1_PREFIX[:len(data)] and data:
        return _parse_v1(data)
    raise ProxyHeaderError("no PROXY protocol header")


def _parse_v1(data):
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or b"\n" in data:
            raise ProxyHeaderError("PROXY v1 line without CRLF in %d bytes" % V1_MAX)
        return None
    try:
        fields = data[:end].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 line is not ASCII") from None
    if fields[1:2] == ["UNKNOWN"]:
        return ProxyHeader(None, end + 2)  # the rest of the line is to be ignored
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("malformed PROXY v1 line %r" % data[:end])
    family = socket.AF_INET if fields[1] == "TCP4" else socket.AF_INET6
    for address in fields[2:4]:
        try:
            socket.inet_pton(family, address)
        except (OSError, ValueError):
            raise ProxyHeaderError("PROXY v1: %r is not a %s address" % (address, fields[1])) from None
    for port in fields[4:6]:
        if not port.isdigit() or (len(port) > 1 and port[0] == "0") or int(port) > 65535:
            raise ProxyHeaderError("PROXY v1: bad port %r" % port)
    return ProxyHeader(fields[2], end + 2)


def _parse_v2(data):
    if len(data) < V2_FIXED:
        return None
    if data[:12] != V2_SIGNATURE:
        raise ProxyHeaderError("bad PROXY v2 signature")
    version_command, family, length = struct.unpack_from("!BBH", data, 12)
    size = V2_FIXED + length
    if version_command >> 4 != 2:
        raise ProxyHeaderError("PROXY v2: unsupported version %d" % (version_command >> 4))
    command = version_command & 0x0F
    if command > 1:
        raise ProxyHeaderError("PROXY v2: unknown command %d" % command)
    if len(data) < size:
        return None
    if command == 0:  # LOCAL: the proxy's own connection (a health check); keep the peer
        return ProxyHeader(None, size)
    address_family = family >> 4
    if address_family == 1:  # INET: 4 + 4 address bytes, 2 + 2 port bytes
        need, pton = 12, socket.AF_INET
    elif address_family == 2:  # INET6
        need, pton = 36, socket.AF_INET6
    else:  # UNSPEC or UNIX: no client address to take
        return ProxyHeader(None, size)
    if length < need:
        raise ProxyHeaderError("PROXY v2: %d address bytes, %d needed" % (length, need))
    width = 4 if pton == socket.AF_INET else 16
    return ProxyHeader(socket.inet_ntop(pton, data[V2_FIXED:V2_FIXED + width]), size)


class TrustedProxies(dict):
    """Which peers' forwarding headers and PROXY headers are believed:
    ``trusted[ip]`` is True or False. Built once from ``trusted_proxies``
    (addresses and CIDRs, or "*"); exact addresses are a plain dict lookup, and
    the answer for other addresses is cached. Unix-socket peers are trusted:
    the socket file's mode decides who may connect."""

    def __init__(self, entries):
        super().__init__()
        self.everyone = "*" in entries
        self.networks = []
        self.exact = {UNIX_PEER: True}
        for entry in entries:
            if entry == "*":
                continue
            network = ipaddress.ip_network(entry, strict=False)
            if network.num_addresses == 1:
                address = network.network_address
                self.exact[str(address)] = True
                if address.version == 4:
                    self.exact["::ffff:" + str(address)] = True  # seen on a dual-stack socket
            else:
                self.networks.append(network)
        self.update(self.exact)

    def __missing__(self, ip):
        trusted = self.everyone or self._in_networks(ip)
        if len(self) >= TRUST_CACHE_SIZE:
            self.clear()
            self.update(self.exact)
        self[ip] = trusted
        return trusted

    def _in_networks(self, ip):
        if not self.networks:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        return any(address in network or (mapped is not None and mapped in network)
                   for network in self.networks)


def check_trusted_proxies(entries):
    """An error message for a bad ``trusted_proxies`` value, or None."""
    if not isinstance(entries, (list, tuple)):
        return "trusted_proxies: expected a list of addresses or CIDRs, got %r" % (entries,)
    for entry in entries:
        if entry == "*":
            continue
        try:
            if not isinstance(entry, str):
                raise TypeError
            ipaddress.ip_network(entry, strict=False)
        except (TypeError, ValueError):
            return "trusted_proxies: %r is not an address or CIDR" % (entry,)
    return None


def client_address(headers, peer, trusted):
    """The client address a trusted ``peer`` forwards: X-Real-IP, else the
    rightmost address in X-Forwarded-For not itself a trusted proxy, else the
    same walk over RFC 7239 ``Forwarded: for=``; else ``peer``."""
    real_ip = headers.get("x-real-ip")
    if real_ip is not None:
        real_ip = _address(real_ip.rpartition(",")[2] if "," in real_ip else real_ip)
        if real_ip is not None:
            return real_ip
    forwarded_for = headers.get("x-forwarded-for")
    if forwarded_for is not None:
        return _rightmost_untrusted(forwarded_for.split(","), peer, trusted)
    forwarded = headers.get("forwarded")
    if forwarded is not None:
        return _rightmost_untrusted(_forwarded_for(forwarded), peer, trusted)
    return peer


def _rightmost_untrusted(hops, peer, trusted):
    """Walk the hops from the nearest: the first untrusted one is the client; a
    hop that is no address ends the walk at the last good one."""
    client = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break
        client = address
        if not trusted[address]:
            break
    return client


def _forwarded_for(value):
    """The ``for=`` values of a Forwarded header, one per element, in order."""
    hops = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, _, node = pair.partition("=")
            if name.strip().lower() == "for":
                hops.append(node)
                break
        else:
            hops.append("")  # an element without for=: nothing known past it
    return hops


_addresses = {}  # node text -> _parse_address(node): the same clients and proxies come back


def _address(node):
    """The IP address in a forwarding header's node (quotes, brackets and a port
    removed), in canonical form, or None when it is none (``unknown``, ``_hidden``...)."""
    address = _addresses.get(node, False)
    if address is False:
        if len(_addresses) >= TRUST_CACHE_SIZE:
            _addresses.clear()
        address = _addresses[node] = _parse_address(node)
    return address


def _parse_address(node):
    node = node.strip().strip('"')
    if node.startswith("["):
        node = node[1:node.find("]")] if "]" in node else ""
    elif node.count(":") == 1:
        node = node.partition(":")[0]
    try:
        if ":" in node:
            return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, node))
        socket.inet_pton(socket.AF_INET, node)
        return node if node.count(".") == 3 else None
    except (OSError, ValueError):
        return None


def forwarded_scheme(headers, default):
    """``X-Forwarded-Proto`` of a trusted proxy when it is http or https, else ``default``."""
    proto = headers.get("x-forwarded-proto")
    if proto == "https" or proto == "http":
        return proto
    if proto is not None:
        proto = proto.rpartition(",")[2].strip().lower()
        if proto in ("http", "https"):
            return proto
    return default
