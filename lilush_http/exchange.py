"""One request through the handler, the same for every protocol.

A protocol driver (protocols/) reads a request head, makes a *stream* (the
interface in docs/architecture.rst: the request, its body source, and a
response sink) and calls ``run``. Here, and only here: ctx is built, the
client address is resolved through trusted proxies, the handler is called,
its result is checked, the response goes to the sink, a handler error becomes
a 500, and the access log line and the metrics are written (``record``).
"""

import io
import logging
import os
import stat as statmodule
import traceback

from .access import access_logger
from .body import BodyReadError
from .forwarding import client_address, forwarded_scheme
from .log import ACCESS
from .response import ResponseError, to_bytes
from .static import FileRange
from .transport import BLOCK_SIZE, ConnectionEnded, StreamFailed

logger = logging.getLogger("lilush_http")

FIXED_CONTENT = (str, bytes, bytearray, memoryview)
# What a handler may raise that becomes a 500: also sys.exit() and a stray
# GeneratorExit, which must not end the serving loop (GreenletExit, the kill of
# a connection on shutdown, is not caught).
HANDLER_FAULTS = (Exception, SystemExit, GeneratorExit)
SERVER_ERROR = {"content-type": "text/plain; charset=utf-8"}
# What a stream's start() says about the body of a streamed response.
NO_BODY = "no body"  # HEAD, 204, 304: nothing more than the head
FILE = "file"  # call write_file(file, size) once
CHUNKS = "chunks"  # call write(data) for each piece


def run(stream, settings, redis):
    """Serve the request of ``stream`` with ``settings.handle``; the response goes
    to the stream's sink. Raises ConnectionEnded when the peer is gone."""
    request = stream.request
    headers = request.headers
    forwarded_real_ip = headers.get("x-real-ip")
    peer = stream.client_ip
    trusted = settings.trusted[peer]
    if trusted and (forwarded_real_ip is not None or "x-forwarded-for" in headers or "forwarded" in headers
                    or "x-forwarded-proto" in headers):
        real_ip, scheme = resolve(headers, peer, stream.tls, trusted, settings.trusted)
    else:  # nothing forwarded, or nothing to believe (resolve's answer, without the call)
        real_ip, scheme = peer, "https" if stream.tls else "http"
        headers["x-client-ip"] = headers["x-real-ip"] = peer
    ctx = {"logger": settings.logger, "client": stream.client, "cfg": settings.cfg, "client_ip": real_ip,
           "redis": redis, "count": stream.count, "sni": stream.sni, "version": request.version,
           "scheme": scheme}
    method = request.method
    status = size = None
    failure = None
    try:
        result = settings.handle(method, request.query, request.args, headers, stream.body, ctx)
        if stream.upgraded() is not None:
            return _end_session(stream, settings, real_ip, forwarded_real_ip, trusted, False)
        if type(result) is tuple and len(result) == 3 and type(result[1]) is int and type(result[0]) is str:
            status = result[1]  # the common answer, without answer()'s dispatch
            size = stream.respond(status, result[2], result[0])
        else:
            status, size = answer(stream, result)
            if status is None:
                return  # the handler answered on the socket itself and said nothing of it
    except ConnectionEnded:
        if stream.upgraded() is not None:
            return _end_session(stream, settings, real_ip, forwarded_real_ip, trusted, True)
        raise
    except StreamFailed as exc:  # logged by answer()
        failure = exc.message
    except ResponseError as exc:
        logger.error("%s %s: %s", method, request.query, exc)
        failure = str(exc)
    except BodyReadError:
        pass  # answered below
    except HANDLER_FAULTS:
        logger.error("handler failed on %s %s:\n%s", method, request.query, traceback.format_exc())
        if stream.upgraded() is not None:
            return _end_session(stream, settings, real_ip, forwarded_real_ip, trusted, True)
        failure = "handler failed"
    body = stream.body
    error = None if body is None or type(body) is bytes else body.error
    if error is not None and size is None:
        # The body broke its limit or its framing, or the client left: no response made then holds.
        return _refuse(stream, settings, real_ip, error.status, error.message)
    if failure is not None:
        status = 500
        size = stream.respond(500, SERVER_ERROR, "500 Internal Server Error\n")
    if settings.recorder is not None or access_logger.isEnabledFor(ACCESS):
        record(settings, request, real_ip, status, size, stream.started, forwarded_real_ip, trusted)


def answer(stream, result):
    """Send the handler's ``result`` through the stream: (status, bytes sent)."""
    if type(result) is tuple and len(result) == 3:
        content, status, headers = result
    else:
        content, status, headers = normalise(result)
    if content is None and status is None and headers is None:
        return stream.raw_answer() or (None, None)  # the handler answered on the socket itself
    if status is None:
        status = 200
    if content is None or isinstance(content, FIXED_CONTENT):
        return status, stream.respond(status, headers, content)
    try:
        return status, send_streamed(stream, content, status, headers)
    except StreamFailed as exc:
        logger.error("%s %s: %s", stream.request.method, stream.request.query, exc.message)
        _debug_traceback(exc)
        if exc.started:  # too late for a 500: the client sees the truncation
            return status, stream.abort(exc.message)
        raise


def normalise(result):
    """A handler's result as (content, status, headers); ResponseError says what is wrong."""
    if type(result) is tuple:
        if len(result) == 3:
            return result
        if 1 <= len(result) <= 2:
            return result + (None,) * (3 - len(result))
        raise ResponseError("handler returned a tuple of %d values; expected a tuple (content, status, headers) "
                            "of 1 to 3 values" % len(result))
    raise ResponseError("handler returned %s; expected a tuple (content, status, headers)"
                        % (type(result).__name__ if result is not None else None,))


def resolve(headers, peer, tls, trusted, proxies):
    """The client's address and the scheme, believing what a ``trusted`` peer
    forwards; sets the X-Client-IP and X-Real-IP headers handlers see."""
    headers["x-client-ip"] = peer
    real_ip = peer
    scheme = "https" if tls else "http"
    if trusted:  # a proxy (or a client on a trusted address): believe what it forwards
        if "x-real-ip" in headers or "x-forwarded-for" in headers or "forwarded" in headers:
            real_ip = client_address(headers, peer, proxies)
        if "x-forwarded-proto" in headers:
            scheme = forwarded_scheme(headers, scheme)
    headers["x-real-ip"] = real_ip
    return real_ip, scheme


def send_streamed(stream, content, status, headers):
    """Send an iterable or file body as it is produced through the stream's
    start/write/write_file/end; returns the bytes sent. ``content.close()`` is
    called in every case, also when the client left."""
    try:
        size = None
        if hasattr(content, "read"):
            size = content.length if type(content) is FileRange else _file_size(content)
            chunks = _read_blocks(content)
        else:
            try:
                chunks = iter(content)
            except TypeError:
                raise ResponseError("handler returned content of type %s; expected str, bytes, "
                                    "None, an iterable or a file" % type(content).__name__) from None
        plan, length = stream.start(status, headers, size)
        if plan is FILE:
            stream.write_file(content, size)
        elif plan is CHUNKS:
            _write_chunks(stream, chunks, length)
        return stream.end()
    finally:
        close = getattr(content, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                logger.error("closing the response body failed:\n%s", traceback.format_exc())


def _write_chunks(stream, chunks, length):
    """Each piece of ``chunks`` to the stream, holding it to ``length`` when promised."""
    sent = 0
    while True:
        try:
            piece = next(chunks)
        except StopIteration:
            break
        except Exception as exc:
            raise StreamFailed("response stream raised %s: %s" % (type(exc).__name__, exc),
                               stream.head_sent) from exc
        try:
            data = to_bytes(piece)
        except ResponseError as exc:
            raise StreamFailed("response stream: %s" % exc, stream.head_sent) from None
        if not data:
            continue
        sent += len(data)
        if length is not None and sent > length:
            raise StreamFailed("response stream produced more than its content-length %d" % length,
                               stream.head_sent)
        stream.write(data)
    if length is not None and sent < length:
        raise StreamFailed("response stream produced %d of its content-length %d" % (sent, length),
                           stream.head_sent)


def _debug_traceback(exc):
    """The traceback of what made a stream fail, at debug level."""
    cause = exc.__cause__
    if cause is not None and logger.isEnabledFor(logging.DEBUG):
        logger.debug("response stream failure:\n%s",
                     "".join(traceback.format_exception(type(cause), cause, cause.__traceback__)))


def _end_session(stream, settings, client_ip, forwarded_real_ip, trusted, failed):
    """The handler of an upgraded connection returned (or raised: ``failed``): close
    the session and log it (status 101, bytes sent, the session's duration)."""
    session = stream.upgraded()
    session.end(failed)
    record(settings, stream.request, client_ip, 101, session.bytes_sent, stream.started, forwarded_real_ip,
           trusted)


def _refuse(stream, settings, client_ip, status, message):
    """Answer a request whose body failed; the connection (or h2 stream) ends."""
    size = stream.refuse(status, message)
    if status is not None:
        logger.debug("refused request from %s: %d %s", client_ip, status, message)
        record(settings, stream.request, client_ip, status, size, None)


def refused(settings, request, peer, status, size, raw_head=None):
    """Log a request a driver refused before its exchange (a bad head, a body over
    the limit): with the address a trusted proxy forwarded, as for any request."""
    client_ip = peer
    if request is not None:
        client_ip = resolve(request.headers, peer, False, settings.trusted[peer], settings.trusted)[0]
    logger.debug("refused request from %s: %d", client_ip, status)
    record(settings, request, client_ip, status, size, None, raw_head=raw_head)


def record(settings, request, client_ip, status, size, started, forwarded_real_ip=None, trusted=False,
           raw_head=None):
    """The access log line and the metrics of one answered request (``started``:
    its perf_counter time, None when refused)."""
    if access_logger.isEnabledFor(ACCESS):
        settings.access.log(request, client_ip, status, size, started, forwarded_real_ip, raw_head, trusted)
    if settings.recorder is not None:
        if request is None:
            settings.recorder.request("-", status, size, started, "-")
        else:
            settings.recorder.request(request.method, status, size, started, request.version)


def _file_size(f):
    """Bytes left from the position of a plain file object (whose fileno() holds
    what read() returns, unlike e.g. gzip.open's), or None."""
    if not isinstance(f, (io.FileIO, io.BufferedReader)):
        return None
    try:
        stat = os.fstat(f.fileno())
        if not statmodule.S_ISREG(stat.st_mode):
            return None
        return max(0, stat.st_size - f.tell())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _read_blocks(f):
    while True:
        block = f.read(BLOCK_SIZE)
        if not block:
            return
        yield block
