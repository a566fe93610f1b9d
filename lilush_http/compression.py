"""Content codings, sans-I/O: Accept-Encoding negotiation and the gzip/deflate/br encoders.

Negotiation follows RFC 9110 section 12.5.3: q-values, ``*``, ``identity;q=0``;
at equal weight gzip is preferred over deflate, and br (only when the
``brotli`` package is installed) is used only when the client ranks it higher.
``deflate`` is the zlib format (RFC 1950), which is what clients expect.
gzip and deflate use ISA-L's deflate (the ``isal`` package, the ``speed``
extra) when it is installed, several times faster than zlib at the same ratio;
zlib otherwise.
"""

import collections
import functools
import zlib

try:
    import brotli
except ImportError:  # optional: without it, gzip and deflate only
    brotli = None

try:
    from isal import isal_zlib
except ImportError:  # optional: zlib does the same, slower
    isal_zlib = None

PREFERENCE = ("gzip", "deflate", "br") if brotli is not None else ("gzip", "deflate")
ALIASES = {"x-gzip": "gzip"}
_WBITS = {"gzip": 31, "deflate": 15}


def parse_accept_encoding(value):
    """``{coding: q}`` from an Accept-Encoding value; malformed entries are skipped."""
    weights = {}
    for entry in value.split(","):
        coding, *params = entry.split(";")
        coding = coding.strip(" \t").lower()
        if not coding:
            continue
        q = 1.0
        for param in params:
            name, _, raw = param.strip(" \t").partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(raw.strip())
                except ValueError:
                    q = -1.0
                if not 0.0 <= q <= 1.0:
                    break
        else:
            coding = ALIASES.get(coding, coding)
            weights[coding] = max(q, weights.get(coding, 0.0))
    return weights


@functools.lru_cache(maxsize=512)
def negotiate(accept_encoding):
    """The coding to use (or None) for this Accept-Encoding, and whether the
    client accepts an uncompressed body at all."""
    if accept_encoding is None:
        return None, True  # no header: no preference, send as is
    weights = parse_accept_encoding(accept_encoding)
    star = weights.get("*")
    # identity is ranked only when the client names it (or ``*``); otherwise it is
    # merely acceptable (RFC 9110 section 12.5.3), so "gzip;q=0.5" still means gzip.
    identity = weights.get("identity", star)
    best, best_q = None, 0.0
    for coding in PREFERENCE:
        q = weights.get(coding, star if star is not None else 0.0)
        if q > best_q:
            best, best_q = coding, q
    if best is not None and identity is not None and best_q < identity:
        best = None  # the client ranks the uncompressed body higher
    return best, identity is None or identity > 0.0


class Policy:
    """The ``compression`` config: which responses get compressed, and how hard."""

    __slots__ = ("enabled", "min_size", "level", "types", "_eligible", "cache_size", "_cache", "_cached_bytes",
                 "_glimpsed")

    def __init__(self, cfg):
        self.enabled = cfg["enabled"]
        self.min_size = cfg["min_size"]
        self.level = cfg["level"]
        self.types = frozenset(t.lower() for t in cfg["types"])
        self._eligible = {}  # content-type header value -> whether its type is listed
        self.cache_size = cfg["cache_size"]
        self._cache = collections.OrderedDict()  # (coding, body) -> encoded body, least recent first
        self._cached_bytes = 0
        self._glimpsed = set()  # glimpses of bodies compressed once, not cached (yet)

    def compress(self, body, coding):
        """``body`` encoded with ``coding``; a body sent again (same bytes) is then served
        from a cache of at most ``cache_size`` bytes.

        A body enters the cache on its second sight only: a page made anew for every
        request would cost the hash of all its bytes and a cache entry each time, for
        nothing. A glimpse of the body (its length and three short samples) tells
        what may have been seen before, cheaply.
        """
        if not self.cache_size or len(body) * 2 > self.cache_size:
            return compress(body, coding, self.level)
        size = len(body)
        glimpse = (coding, size, body[:32], body[size // 2:size // 2 + 32], body[-32:])
        if glimpse not in self._glimpsed:
            if len(self._glimpsed) >= 4096:
                self._glimpsed.clear()
            self._glimpsed.add(glimpse)
            return compress(body, coding, self.level)
        key = (coding, body)
        cache = self._cache
        encoded = cache.get(key)
        if encoded is not None:
            cache.move_to_end(key)
            return encoded
        encoded = compress(body, coding, self.level)
        cache[key] = encoded
        self._cached_bytes += len(body) + len(encoded)
        while self._cached_bytes > self.cache_size:
            (_, old_body), old_encoded = cache.popitem(last=False)
            self._cached_bytes -= len(old_body) + len(old_encoded)
        return encoded

    def eligible(self, content_type):
        """Whether ``content_type`` (parameters ignored) is a listed type."""
        eligible = self._eligible.get(content_type)
        if eligible is None:
            eligible = content_type.partition(";")[0].strip(" \t").lower() in self.types
            if len(self._eligible) < 1024:
                self._eligible[content_type] = eligible
        return eligible

    def choose(self, accept_encoding, content_type, size):
        """(coding or None, vary): vary is true when the answer depends on Accept-Encoding.

        ``size`` None means a streamed body of unknown length (min_size does
        not apply). A client that refuses identity gets a coding whatever the size.
        """
        if not self.enabled or not self.eligible(content_type):
            return None, False
        return self.coding_for(accept_encoding, size), True

    def coding_for(self, accept_encoding, size):
        """The coding for a body of an eligible type (None: send it as it is)."""
        if accept_encoding is None:
            return None
        coding, identity_ok = negotiate(accept_encoding)
        if coding is None or (size is not None and size < self.min_size and identity_ok):
            return None
        return coding


# zlib's levels 0-9 as ISA-L's 0-3: its 1 compresses about as well as zlib's 6 (0: stored, by zlib).
ISAL_LEVELS = (None, 0, 0, 0, 1, 1, 1, 3, 3, 3)


def deflater(coding, level):
    """A compressobj for gzip or deflate at zlib's ``level``: ISA-L's when installed, else zlib's."""
    if isal_zlib is not None and level:
        return isal_zlib.compressobj(ISAL_LEVELS[level], isal_zlib.DEFLATED, _WBITS[coding])
    return zlib.compressobj(level, zlib.DEFLATED, _WBITS[coding])


def compress(data, coding, level):
    """``data`` encoded whole with ``coding``."""
    if coding == "br":
        return brotli.compress(data, quality=level)
    encoder = deflater(coding, level)
    return encoder.compress(data) + encoder.flush()


class StreamEncoder:
    """Encodes a streamed body chunk by chunk; each chunk is flushed so the client
    can decode it on arrival, and ``finish`` writes the end (the gzip CRC and size)."""

    __slots__ = ("_process", "_flush", "_finish")

    def __init__(self, coding, level):
        if coding == "br":
            encoder = brotli.Compressor(quality=level)
            self._process, self._flush, self._finish = encoder.process, encoder.flush, encoder.finish
        else:
            encoder = deflater(coding, level)
            self._process = encoder.compress
            self._flush = functools.partial(encoder.flush, zlib.Z_SYNC_FLUSH)
            self._finish = encoder.flush

    def compress(self, data):
        if not data:
            return b""  # everything before is flushed already: an empty chunk adds nothing
        return self._process(data) + self._flush()

    def finish(self):
        return self._finish()
