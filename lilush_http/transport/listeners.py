"""The listening socket ``serve()`` accepts on: a TCP port (SO_REUSEPORT on
request), a unix socket file, or a descriptor inherited from the process that
started us (systemd socket activation, ``--fd``).

``listen(cfg)`` gives ``(Listener, None)`` or ``(None, err)``; workers forked
afterwards share the socket. ``Listener.close()`` removes a unix socket file
it created.
"""

import ctypes
import logging
import os
import resource
import socket
import stat
import struct

import _socket
from gevent import socket as gsocket

logger = logging.getLogger("lilush_http")

SD_LISTEN_FDS_START = 3  # systemd passes the sockets from descriptor 3 on
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)  # Linux
# A classic BPF program on the listener: a segment without ACK (a new client's SYN) is
# dropped; the rest passes, so a handshake already begun completes into the accept queue
# (dropping its final ACK too left the client connected to nothing, then reset at close).
# The listener's filter sees the TCP header at offset 0; byte 13 holds the flags.
DROP_NEW_CONNECTIONS = (
    (0x30, 0, 0, 13),  # BPF_LD | BPF_B | BPF_ABS: the flags byte
    (0x45, 0, 1, 0x10),  # BPF_JMP | BPF_JSET | BPF_K: ACK set? the next one, else skip it
    (0x06, 0, 0, 0xFFFFFFFF),  # BPF_RET | BPF_K: the whole segment passes
    (0x06, 0, 0, 0),  # BPF_RET | BPF_K: dropped
)
FILTER = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in DROP_NEW_CONNECTIONS))
TCP_INFO_SIZE = 136
ACCEPT_QUEUE = struct.Struct("24xI")  # tcpi_unacked: of a listener, its accept queue


class Listener:
    """A bound, listening gevent socket and what it listens on."""

    def __init__(self, sock, name, unix_path=None):
        sock.setblocking(False)  # as gevent's StreamServer expects of a listener
        self.sock = sock
        self.name = name  # for the start line: "127.0.0.1:8080", "unix:/run/app.sock", ...
        self._unix_path = unix_path  # a file this process created, removed on close
        self._unix_inode = _inode(unix_path) if unix_path else None

    def close(self):
        self.sock.close()
        if self._unix_path and _inode(self._unix_path) == self._unix_inode:
            try:  # only our own file: another instance may have replaced it since
                os.unlink(self._unix_path)
            except OSError:
                pass


def reserve_descriptors(connection_limit):
    """Raise this process's soft descriptor limit (up to the hard one) to what
    ``connection_limit`` connections may need: one each, one more for a file being
    sent, and some for the rest. Warns when the hard limit is lower."""
    wanted = 2 * connection_limit + 64
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    except (OSError, ValueError) as exc:
        logger.warning("cannot raise the descriptor limit for connection_limit %d: %s", connection_limit, exc)
        return
    if soft != resource.RLIM_INFINITY and soft < wanted:
        logger.warning("connection_limit %d may need %d descriptors; the limit is %d (ulimit -n)",
                       connection_limit, wanted, soft)


def stop_listening(sock):
    """Have the kernel answer no new connection attempt on the TCP listener ``sock``,
    in every process sharing it at once, while the connections it already queued, or
    is completing, stay to be accepted: a filter that drops the SYNs arriving on it, so
    a new client's SYN goes unanswered and its retry finds the port closed (refused).
    True when done (Linux), False otherwise."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    program = struct.pack("HL", len(DROP_NEW_CONNECTIONS), ctypes.addressof(FILTER))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, program)
    except (OSError, ValueError):
        return False
    return True


def queued(sock):
    """How many connections wait in the TCP listener's accept queue (Linux), else None."""
    try:
        return ACCEPT_QUEUE.unpack_from(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE))[0]
    except (OSError, ValueError, struct.error, AttributeError):
        return None


def listen(cfg):
    """Bind and listen as ``cfg`` says: ``fd``, else ``unix_socket``, else ``ip``/``port``."""
    if cfg.get("fd") is not None:
        return inherit(cfg["fd"], cfg["backlog"])
    if cfg.get("unix_socket"):
        return bind_unix(cfg["unix_socket"], cfg.get("unix_socket_mode"), cfg["backlog"])
    return bind_tcp(cfg["ip"], cfg["port"], cfg["backlog"], cfg.get("reuse_port", False))


def bind_tcp(ip, port, backlog, reuse_port=False):
    """A TCP listener with SO_REUSEADDR, and SO_REUSEPORT when asked (two
    processes then share the port, the kernel spreading connections)."""
    host = ip.strip("[]")
    sock = gsocket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        return None, "failed to bind %s:%s: %s" % (ip, port, exc.strerror or exc)
    bound = sock.getsockname()
    return Listener(sock, "%s:%d" % ("[%s]" % bound[0] if ":" in bound[0] else bound[0], bound[1])), None


def bind_unix(path, mode=None, backlog=256):
    """A unix socket listener at ``path``. A stale socket file (nothing answers)
    is replaced; a live one is an error; ``mode`` (e.g. "0660") is set before
    anyone can connect."""
    err = _remove_stale(path)
    if err:
        return None, err
    sock = gsocket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        if mode is not None:
            os.chmod(path, int(mode, 8))  # before listen(): nobody can connect yet
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        return None, "failed to bind unix:%s: %s" % (path, exc.strerror or exc)
    return Listener(sock, "unix:%s" % path, path), None


def _remove_stale(path):
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return "failed to bind unix:%s: %s" % (path, exc.strerror or exc)
    if not stat.S_ISSOCK(info.st_mode):
        return "failed to bind unix:%s: a file that is not a socket is in the way" % path
    probe = _socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        try:
            os.unlink(path)  # stale: left by a process that died
        except FileNotFoundError:
            pass
        return None
    except OSError as exc:  # a full backlog (timeout), no permission...
        return "failed to bind unix:%s: %s" % (path, exc.strerror or exc)
    finally:
        probe.close()
    return "failed to bind unix:%s: another server is listening on it" % path


def inherit(fd, backlog=256):
    """A listener on the already-bound stream socket ``fd`` (listen() is called
    again, which is harmless on a listening socket)."""
    try:
        sock = gsocket.socket(fileno=fd)
    except OSError as exc:
        return None, "fd %d: not a socket we can use: %s" % (fd, exc.strerror or exc)
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        return None, "fd %d: not a stream socket" % fd
    try:
        sock.listen(backlog)
        bound = sock.getsockname()
    except OSError as exc:
        sock.detach()
        return None, "fd %d: cannot listen: %s" % (fd, exc.strerror or exc)
    if sock.family == socket.AF_UNIX:
        name = "unix:%s" % (bound.decode() if isinstance(bound, bytes) else bound)
    else:
        name = "%s:%d" % ("[%s]" % bound[0] if ":" in bound[0] else bound[0], bound[1])
    return Listener(sock, name + " (fd %d)" % fd), None


def systemd_fds(environ=None):
    """The descriptors systemd passed this process (``LISTEN_FDS`` with
    ``LISTEN_PID`` naming it), or []. The variables are removed, so that
    programs the handler starts do not take the sockets for theirs."""
    environ = os.environ if environ is None else environ
    try:
        pid = int(environ.get("LISTEN_PID", ""))
        count = int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    if pid != os.getpid() or count < 1:
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(name, None)
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))


def _inode(path):
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino
