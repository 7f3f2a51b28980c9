"""The control socket, served from the daemon's own selector loop.

Hotplug tracking must never wait for an admin's client, so nothing here
blocks: every client socket is non-blocking with its own read and write
buffers, and a client gets at most `timeout_ms` to send a request and read
its reply before it is dropped. A client sends one request per line and may
send several; the next is read only once the previous reply has been
written, so a client that never reads cannot make the daemon buffer more
than one reply for it.

A reply may be deferred: the handler returns a Later (a `reconcile` waits
for its update, a kexec load included), and the reply is written when the
loop resolves it. Meanwhile the client is served nothing else and its
deadline does not run, since it is waiting for the daemon and not idle; a
client that hangs up meanwhile is dropped at once, and its reply, when it
comes, is thrown away.

Access is the file system's: the socket is mode 0660 with the configured
group, so only root and that group can connect at all. Which requests a
connected peer may make is decided from SO_PEERCRED by the request handler.
"""

import grp
import logging
import os
import select
import selectors
import socket
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from .. import log
from ..config import ControlConfig
from ..errors import CrashhpdError
from ..later import Later
from .protocol import failure

logger = logging.getLogger(__name__)

SOCKET_MODE = 0o660
DIR_MODE = 0o755  # crashhpctl users must reach the socket; the socket's own mode guards it
MAX_CLIENTS = 256  # well below the default 1024 descriptors, so a flood cannot starve the monitor
ACCEPT_BATCH = 64  # connections taken per wake-up, so one flood does not delay events
RECV_CHUNK = 65536
PROBE_TIMEOUT_S = 1.0
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

Handler = Callable[[bytes, "Peer"], "bytes | Later[bytes]"]


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
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    eof: bool = False  # the peer will send nothing more
    closing: bool = False  # close once outbuf is written (after a reply that ends the connection)
    events: int = selectors.EVENT_READ  # 0: out of the selector, waiting for a deferred reply with nothing to read
    waiting: Later[bytes] | None = None  # a deferred reply not resolved yet


def peer_of(sock: socket.socket) -> Peer:
    return Peer(*_UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)))


def group_id(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ControlError(f"[control] group {name!r} does not exist; create it or set another group") from None


class ControlServer:
    """Listening socket and clients; `handle(line, peer)` turns one request line into one reply line."""

    def __init__(self, cfg: ControlConfig, selector: selectors.BaseSelector, handle: Handler,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self._selector = selector
        self._handle = handle
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
        _ensure_dir(os.path.dirname(path))
        _refuse_live(path)
        temp = f"{path}.{os.getpid()}.tmp"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            _unlink_quietly(temp)
            listener.bind(temp)
            os.chown(temp, -1, gid)
            os.chmod(temp, SOCKET_MODE)
            listener.listen(128)
            listener.setblocking(False)
            self._inode = os.stat(temp).st_ino
            os.rename(temp, path)
        except OSError as err:
            listener.close()
            _unlink_quietly(temp)
            raise ControlError(f"{path}: cannot create the control socket: {err.strerror or err}") from None
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
        return min((c.deadline for c in self._clients.values() if c.waiting is None), default=None)

    def expire(self, now: float) -> None:
        """Drop clients past their deadline; one still waiting to send its request is told why.

        A client waiting for a deferred reply has no deadline until the reply is there.
        """
        for client in [c for c in self._clients.values() if c.deadline <= now and c.waiting is None]:
            if not client.outbuf:
                _send_once(client.sock, failure("timeout", f"no complete request within {self.cfg.timeout_ms} ms"))
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
            if len(self._clients) >= MAX_CLIENTS:
                _send_once(sock, failure("busy", f"{MAX_CLIENTS} clients already connected; try again"))
                sock.close()
                continue
            client = _Client(sock, peer_of(sock), self._clock() + self.cfg.timeout_ms / 1000)
            self._clients[sock.fileno()] = client
            self._selector.register(sock, selectors.EVENT_READ, partial(self._on_client, client))
            # the request usually follows the connect at once: answer it now, not one loop turn (and
            # perhaps one uevent batch) later
            self._on_client(client, selectors.EVENT_READ)

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
        """Answer buffered requests one at a time, then wait for what the client's state needs next."""
        while not client.outbuf and not client.closing and client.waiting is None:
            line = self._next_line(client)
            if line is None:
                break
            reply = self._handle(line, client.peer)
            if isinstance(reply, Later):
                if not reply.done:
                    client.waiting = reply
                    reply.on_done(partial(self._answered, client))
                    break
                reply = reply.result()
            client.outbuf += reply
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
        if client.outbuf:
            return selectors.EVENT_WRITE
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

    def _next_line(self, client: _Client) -> bytes | None:
        """The next request line; a final line without a newline counts once the client stops sending."""
        limit = self.cfg.max_request_bytes
        end = client.inbuf.find(b"\n", 0, limit + 1)
        if end < 0 and len(client.inbuf) > limit:
            client.outbuf += failure("too-large", f"request longer than {limit} bytes")
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
    try:
        os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
    except OSError as err:
        raise ControlError(f"{directory}: cannot create the control socket's directory: {err.strerror}") from None


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
    raise ControlError(f"{path}: another process answers on this socket (is crashhpd already running?)")


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
