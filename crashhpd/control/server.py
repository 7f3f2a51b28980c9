# SPDX-License-Identifier: GPL-2.0-only
"""The control socket, served from the daemon's own selector loop.

Hotplug tracking must never wait for an admin's client, so nothing here
blocks: every client socket is non-blocking with its own read and write
buffers, and a client gets at most `timeout_ms` to send a request and read
its reply before it is dropped. A client sends one request per line and may
send several; the next is read only once the previous reply has been
written, so a client that never reads cannot make the daemon buffer more
than one reply for it.

A reply may be deferred: the handler returns a Later (a `reconcile` waits
for its update, a kexec load included; root's fresh `verify` waits for its
turn), and the reply is written when the loop resolves it. Meanwhile the
client is served nothing else and its deadline does not run, since it is
waiting for the daemon and not idle; a client that hangs up meanwhile is
dropped at once, and its reply, when it comes, is thrown away.

Access is the file system's: the socket is mode 0660 with the configured
group, so only root and that group can connect at all. Which requests a
connected peer may make is decided from SO_PEERCRED by the request handler.

No client can hold the loop or lock root out: each client gets at most one
request answered per turn of the loop (a pipelined flood is served at the
pace of everyone else), a non-root uid may hold at most MAX_PER_UID
connections, and uid 0 is always admitted: when the table is full, the
oldest non-root client makes room.

The socket's permissions are never set through a path somebody else could
swap: it is bound, with its mode already right (the umask), inside a fresh
directory only root can enter, given its group there, and renamed into
place; its directory must belong to root and be writable by nobody else.
"""

import grp
import logging
import os
import select
import selectors
import socket
import stat
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from .. import log
from ..config import ControlConfig
from ..errors import CrashhpdError
from ..service.later import Later
from ..service.status import ControlCounters
from .contract import encode_error

logger = logging.getLogger(__name__)

SOCKET_MODE = 0o660
DIR_MODE = 0o755  # crashhpctl users must reach the socket; the socket's own mode guards it
MAX_CLIENTS = 256  # well below the default 1024 descriptors, so a flood cannot starve the monitor
MAX_PER_UID = 32  # connections one non-root uid may hold: a slowloris of one user leaves room for the rest
ACCEPT_BATCH = 64  # connections taken per wake-up, so one flood does not delay events
RECV_CHUNK = 65536
PROBE_TIMEOUT_S = 1.0
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class SocketTaken(CrashhpdError):
    """Another process answers on the control socket: most likely another crashhpd (its own exit status)."""


class ControlError(CrashhpdError):
    """The control socket cannot be set up as configured."""


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end, as the kernel vouches for it at connect time."""

    pid: int
    uid: int
    gid: int


@dataclass(eq=False, slots=True)
class _Client:
    sock: socket.socket
    peer: Peer
    deadline: float  # the current request must be read and answered by then
    received_at: float = 0.0  # when the last bytes in inbuf were read: every line there was read by then
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    eof: bool = False  # the peer will send nothing more
    closing: bool = False  # close once outbuf is written (after a reply that ends the connection)
    events: int = selectors.EVENT_READ  # 0: out of the selector, waiting for a deferred reply with nothing to read
    waiting: Later[bytes] | None = None  # a deferred reply not resolved yet


class Handler(Protocol):
    """Turns request lines into reply lines; may hold some replies back until a time of its own."""

    def handle(self, line: bytes, peer: Peer, received_at: float) -> bytes | Later[bytes]:
        """The reply to `line` from `peer`, read at `received_at` (the server's clock), now or Later."""
        ...

    def next_deadline(self) -> float | None: ...

    def expire(self, now: float) -> None:
        """Resolve what was held back until now."""
        ...


def peer_of(sock: socket.socket) -> Peer:
    return Peer(*_UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)))


def group_id(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ControlError(f"[control] group {name!r} does not exist; create it or set another group") from None


class ControlServer:
    """Listening socket and clients; the handler turns one request line into one reply line."""

    def __init__(self, cfg: ControlConfig, selector: selectors.BaseSelector, handler: Handler,
                 counters: ControlCounters | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self._selector = selector
        self._handler = handler
        self._counters = counters if counters is not None else ControlCounters()
        self._clock = clock
        self._listener: socket.socket | None = None
        self._inode: int | None = None  # of the socket file we bound, so close() removes only ours
        self._clients: dict[int, _Client] = {}

    # --- the listening socket ------------------------------------------------------------

    def open(self) -> None:
        """Bind under a temporary name, set mode and group, then rename into place.

        Nobody can connect before the permissions are right, and a stale
        socket left by a dead daemon is replaced in the same rename.
        """
        path = self.cfg.socket
        gid = group_id(self.cfg.group)
        directory = os.path.dirname(path)
        _ensure_dir(directory)
        _refuse_live(path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            private = tempfile.mkdtemp(prefix=".crashhpd-bind-", dir=directory)  # 0700: nobody else can enter
        except OSError as err:
            listener.close()
            raise ControlError(f"{directory}: cannot create the control socket: {err.strerror or err}") from None
        temp = os.path.join(private, "control.sock")
        old_umask = os.umask(0o777 & ~SOCKET_MODE)  # bind() creates the file with its final mode
        try:
            listener.bind(temp)
            os.chown(temp, -1, gid, follow_symlinks=False)
            listener.listen(128)
            listener.setblocking(False)
            self._inode = os.stat(temp, follow_symlinks=False).st_ino
            os.rename(temp, path)
        except OSError as err:
            listener.close()
            raise ControlError(f"{path}: cannot create the control socket: {err.strerror or err}") from None
        finally:
            os.umask(old_umask)
            _unlink_quietly(temp)
            os.rmdir(private)
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, self._accept)
        logger.info("control socket %s (group %s, mode %o)", path, self.cfg.group, SOCKET_MODE,
                    extra=log.fields("control", socket=path, group=self.cfg.group))

    def close(self) -> None:
        """Drop every client and remove the socket file if it is still the one we bound."""
        for client in list(self._clients.values()):
            self._drop(client)
        if self._listener is None:
            return
        self._selector.unregister(self._listener)
        self._listener.close()
        self._listener = None
        try:
            if os.stat(self.cfg.socket).st_ino == self._inode:
                os.unlink(self.cfg.socket)
        except OSError:
            pass

    def reconfigure(self, cfg: ControlConfig) -> None:
        """SIGHUP: a new path or group means a new socket; if it cannot be made, the old one comes back."""
        if (cfg.socket, cfg.group) == (self.cfg.socket, self.cfg.group):
            self.cfg = cfg
            return
        old = self.cfg
        self.close()
        self.cfg = cfg
        try:
            self.open()
        except ControlError:
            self.cfg = old
            self.open()
            raise

    # --- deadlines -------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        deadlines = [c.deadline for c in self._clients.values() if c.waiting is None]
        held = self._handler.next_deadline()
        return min([*deadlines, *([] if held is None else [held])], default=None)

    def expire(self, now: float) -> None:
        """Drop clients past their deadline; one still waiting to send its request is told why.

        A client waiting for a deferred reply has no deadline until the reply is there; the
        handler resolves first what it held back until now.
        """
        self._handler.expire(now)
        for client in [c for c in self._clients.values() if c.deadline <= now and c.waiting is None]:
            if not client.outbuf:
                _send_once(client.sock, encode_error("timeout", f"no complete request within {self.cfg.timeout_ms} ms"))
            logger.debug("control client pid %d timed out", client.peer.pid)
            self._drop(client)

    # --- clients -----------------------------------------------------------------------------

    def _accept(self, _mask: int) -> None:
        assert self._listener is not None
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _addr = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as err:
                logger.warning("control socket: accept failed: %s", err.strerror, extra=log.fields("control"))
                return
            sock.setblocking(False)
            peer = peer_of(sock)
            refusal = self._admit(peer)
            if refusal is not None:
                self._counters.busy += 1
                _send_once(sock, encode_error("busy", refusal))
                sock.close()
                continue
            client = _Client(sock, peer, self._clock() + self.cfg.timeout_ms / 1000)
            self._clients[sock.fileno()] = client
            self._selector.register(sock, selectors.EVENT_READ, partial(self._on_client, client))
            # the request usually follows the connect at once: answer it now, not one loop turn (and
            # perhaps one uevent batch) later
            self._on_client(client, selectors.EVENT_READ)

    def counters(self) -> ControlCounters:
        self._counters.clients = len(self._clients)
        return self._counters

    def _admit(self, peer: Peer) -> str | None:
        """Why a new connection of `peer` is turned away, or None; root takes the oldest non-root client's slot."""
        if peer.uid != 0:
            if len(self._clients) >= MAX_CLIENTS:
                return f"{MAX_CLIENTS} clients already connected; try again"
            if sum(1 for c in self._clients.values() if c.peer.uid == peer.uid) >= MAX_PER_UID:
                return f"uid {peer.uid} already holds {MAX_PER_UID} connections; close one"
            return None
        if len(self._clients) < MAX_CLIENTS:
            return None
        oldest = next((c for c in self._clients.values() if c.peer.uid != 0), None)  # dicts keep accept order
        if oldest is None:
            return f"{MAX_CLIENTS} clients of root already connected; try again"
        _send_once(oldest.sock, encode_error("busy", "dropped to make room for root"))
        self._drop(oldest)
        return None

    def _on_client(self, client: _Client, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            self._receive(client)
        if mask & selectors.EVENT_WRITE:
            self._send(client)
        self._serve(client)

    def _receive(self, client: _Client) -> None:
        try:
            data = client.sock.recv(RECV_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            client.eof = client.closing = True
            return
        if data:
            client.inbuf += data
            client.received_at = self._clock()
        else:
            client.eof = True

    def _send(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.outbuf, socket.MSG_NOSIGNAL)
        except BlockingIOError:
            return
        except OSError as err:
            logger.debug("control client pid %d went away mid-reply: %s", client.peer.pid, err.strerror)
            client.outbuf.clear()
            client.closing = True
            return
        del client.outbuf[:sent]
        if not client.outbuf:
            client.deadline = self._clock() + self.cfg.timeout_ms / 1000

    def _serve(self, client: _Client) -> None:
        """Answer the next buffered request, if any, then wait for what the client's state needs next.

        One request per call, that is per turn of the loop: a client with more
        requests queued is woken again on the next turn (its socket is
        writable), after everyone else ready in this one.
        """
        if not client.outbuf and not client.closing and client.waiting is None:
            line = self._next_line(client)
            if line is not None:
                reply = self._handler.handle(line, client.peer, client.received_at)
                if isinstance(reply, Later) and not reply.done:
                    client.waiting = reply
                    reply.on_done(partial(self._answered, client))
                else:
                    client.outbuf += reply.result() if isinstance(reply, Later) else reply
                    self._send(client)  # most replies fit the socket buffer: no extra trip through the loop
        if client.waiting is not None:
            if client.closing or (client.eof and _hung_up(client.sock)):
                logger.debug("control client pid %d went away while its reply was deferred", client.peer.pid)
                self._drop(client)
                return
        elif (client.closing or (client.eof and not client.inbuf)) and not client.outbuf:
            self._drop(client)
            return
        self._watch(client, self._interest(client))

    def _interest(self, client: _Client) -> int:
        if client.outbuf or (client.waiting is None and not client.closing and self._has_request(client)):
            return selectors.EVENT_WRITE  # more to write, or a queued request to answer on the next turn
        if client.waiting is not None and (client.eof or len(client.inbuf) > self.cfg.max_request_bytes):
            return 0  # a half-closed client, or one far ahead of its replies: nothing to read until the reply
        return selectors.EVENT_READ

    def _watch(self, client: _Client, wanted: int) -> None:
        if wanted == client.events:
            return
        if client.events == 0:
            self._selector.register(client.sock, wanted, partial(self._on_client, client))
        elif wanted == 0:
            self._selector.unregister(client.sock)
        else:
            self._selector.modify(client.sock, wanted, partial(self._on_client, client))
        client.events = wanted

    def _answered(self, client: _Client, reply: Later[bytes]) -> None:
        """A deferred reply is there: write it, and go on with the client's next request."""
        if client.waiting is not reply:
            return  # the client was dropped while it waited
        client.waiting = None
        client.outbuf += reply.result()
        client.deadline = self._clock() + self.cfg.timeout_ms / 1000  # reading the reply gets the usual time
        self._send(client)
        self._serve(client)

    def _has_request(self, client: _Client) -> bool:
        return b"\n" in client.inbuf or (client.eof and bool(client.inbuf))

    def _next_line(self, client: _Client) -> bytes | None:
        """The next request line; a final line without a newline counts once the client stops sending."""
        limit = self.cfg.max_request_bytes
        end = client.inbuf.find(b"\n", 0, limit + 1)
        if end < 0 and len(client.inbuf) > limit:
            client.outbuf += encode_error("too-large", f"request longer than {limit} bytes")
            client.inbuf.clear()
            client.closing = True
            return None
        if end < 0:
            if not (client.eof and client.inbuf):
                return None
            end = len(client.inbuf)
        line = bytes(client.inbuf[:end])
        del client.inbuf[:end + 1]
        return line

    def _drop(self, client: _Client) -> None:
        if client.events:
            self._selector.unregister(client.sock)
        del self._clients[client.sock.fileno()]
        client.sock.close()
        client.waiting = None


# --- file system edge ----------------------------------------------------------------------------


def _ensure_dir(directory: str) -> None:
    """The socket's directory, created if missing; one that another user could write to is refused."""
    try:
        os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
        st = os.lstat(directory)
    except OSError as err:
        raise ControlError(f"{directory}: cannot create the control socket's directory: {err.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ControlError(f"{directory} is not a directory (a symlink?); the control socket's directory must be one")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ControlError(f"{directory} is owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):o}; the "
                           "control socket's directory must be root's and writable by nobody else")


def _refuse_live(path: str) -> None:
    """A socket someone answers on belongs to a running daemon; one nobody answers is stale."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlError(f"{path} exists and is not a socket; remove it or set [control] socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_TIMEOUT_S)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return
    except OSError as err:
        raise ControlError(f"{path}: cannot tell whether another daemon uses it: {err.strerror or err}") from None
    finally:
        probe.close()
    raise SocketTaken(f"{path}: another process answers on this socket (is crashhpd already running?)")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _hung_up(sock: socket.socket) -> bool:
    """The peer closed its end entirely (POLLHUP), rather than only its sending side (shutdown(SHUT_WR))."""
    poller = select.poll()
    poller.register(sock, 0)  # POLLHUP and POLLERR are reported whatever is asked for
    return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))


def _send_once(sock: socket.socket, data: bytes) -> None:
    """A last word before closing; a client that cannot take it loses nothing it was owed."""
    try:
        sock.send(data, socket.MSG_NOSIGNAL)
    except OSError:
        pass
