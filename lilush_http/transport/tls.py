"""TLS: server contexts built once per ``configure``, and SNI choosing among them.

The ``ssl`` config is ``{"default": {"cert", "key"}, "hosts": {name: {"cert", "key"}}}``.
Each pair is loaded into its own context (TLS 1.2 minimum with the suites of
``tls_ciphers``: AEAD only by default; ALPN: the protocols the server speaks,
``http/1.1`` and, once its driver is in, ``h2``).
The default context's SNI callback switches a connection to the context of
the name the client asked for (case-insensitive; ``*.example.com`` matches
one label); other names, and clients that send no SNI, get the default.
"""

import os
import ssl

import gevent
from gevent import socket as gevent_socket
from gevent import ssl as gevent_ssl

from ..config import MOZILLA_INTERMEDIATE


class HandshakeFailed(Exception):
    """The TLS handshake did not complete (timeout, protocol error, client refused).
    ``plain_http``: a copy of the socket when the client spoke plain HTTP (it gets a 400)."""

    def __init__(self, message, plain_http=None):
        super().__init__(message)
        self.plain_http = plain_http


class Certificates:
    """The TLS contexts of one ``ssl`` config; immutable once built."""

    def __init__(self, default, hosts, wildcards):
        self.default = default
        self.hosts = hosts  # exact lower-case name -> context
        self.wildcards = wildcards  # ".example.com" -> context
        default.sni_callback = self._pick

    def context_for(self, name):
        """The context serving ``name`` (the default when nothing matches)."""
        if not name:
            return self.default
        name = name.lower().rstrip(".")
        context = self.hosts.get(name)
        if context is None:
            _, dot, parent = name.partition(".")
            context = self.wildcards.get("." + parent) if dot and parent else None
        return context or self.default

    def _pick(self, sslsock, server_name, _context):
        sslsock.lilush_sni = server_name.lower() if server_name else None
        context = self.context_for(server_name)
        if context is not self.default:
            sslsock.context = context

    def handshake(self, sock, timeout):
        """Wrap an accepted socket and complete the handshake within ``timeout``
        seconds (a deadline for the whole exchange). Returns (tls socket, SNI name,
        the ALPN protocol chosen or None)."""
        sslsock = self.default.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        try:
            with gevent.Timeout(timeout, HandshakeFailed("TLS handshake timeout")):
                sslsock.do_handshake()
        except HandshakeFailed:
            sslsock.close()
            raise
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            plain = None
            if isinstance(exc, ssl.SSLError) and exc.reason == "HTTP_REQUEST":
                plain = _raw_copy(sslsock)
            sslsock.close()
            raise HandshakeFailed("TLS handshake failed: %s" % (exc.strerror or exc,), plain) from None
        return sslsock, getattr(sslsock, "lilush_sni", None), sslsock.selected_alpn_protocol()


def _raw_copy(sslsock):
    """The TCP socket under ``sslsock`` (a duplicate), to answer a plain-HTTP client."""
    try:
        return gevent_socket.socket(fileno=os.dup(sslsock.fileno()))
    except (OSError, ValueError):
        return None


class _EncryptedKey(Exception):
    pass


def _no_passphrase():
    # Without a password callback OpenSSL asks for the passphrase of an
    # encrypted key on the terminal, blocking configure (and the whole hub).
    raise _EncryptedKey()


def _context(where, pair, alpn, ciphers):
    context = gevent_ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.set_ciphers(ciphers)  # TLS 1.2 suites (config tls_ciphers)
    except ssl.SSLError:
        return None, "tls_ciphers: no cipher suite of %r is available" % (ciphers,)
    context.set_alpn_protocols(list(alpn))
    # Read EOF without close_notify as a plain end of input (as nginx does). Otherwise
    # OpenSSL 3 answers it with a fatal decode_error alert, and that is what a client
    # got when the server closed its idle keep-alive connection (evict: SHUT_RD).
    context.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    try:
        context.load_cert_chain(pair["cert"], pair["key"], password=_no_passphrase)
    except _EncryptedKey:
        return None, "%s: key %s is encrypted (passphrase-protected keys are not supported)" % (
            where, pair["key"])
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in reason or "key values mismatch" in str(exc):
            return None, "%s: key %s does not match certificate %s" % (where, pair["key"], pair["cert"])
        return None, "%s: cannot load %s / %s: %s (expected PEM files)" % (where, pair["cert"], pair["key"], reason)
    except OSError as exc:
        return None, "%s: cannot read %s / %s: %s" % (where, pair["cert"], pair["key"], exc.strerror or exc)
    return context, None


def build(ssl_config, alpn=("http/1.1",), ciphers=MOZILLA_INTERMEDIATE):
    """``(Certificates, None)`` for a validated ``ssl`` table, or ``(None, err)``
    naming the host and the file that failed; ``(None, None)`` when TLS is off.
    ``alpn``: the protocols offered, in order of preference; ``ciphers``: the
    TLS 1.2 suites (an OpenSSL cipher list)."""
    if not ssl_config:
        return None, None
    default, err = _context("ssl.default", ssl_config["default"], alpn, ciphers)
    if err:
        return None, err
    hosts, wildcards = {}, {}
    for name, pair in (ssl_config.get("hosts") or {}).items():
        if not isinstance(name, str) or not name.strip(".") or name.strip(".") == "*":
            return None, "ssl.hosts: %r is not a host name" % (name,)
        context, err = _context("ssl.hosts[%r]" % name, pair, alpn, ciphers)
        if err:
            return None, err
        name = name.lower().rstrip(".")
        if name.startswith("*."):
            wildcards[name[1:]] = context
        else:
            hosts[name] = context
    return Certificates(default, hosts, wildcards), None
