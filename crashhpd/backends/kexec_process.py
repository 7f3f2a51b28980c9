# SPDX-License-Identifier: GPL-2.0-only
"""One kexec process, run beside the event loop: its pipes and a pidfd in the loop's selector.

The load is done when kexec exits (the pidfd says so); whatever it started and
left behind may keep its pipes open, so they are closed then, not read to the
end. At the timeout the whole process group is killed. Its output is kept to
the last OUTPUT_CAP bytes per stream, the end being where kexec says what went wrong.
"""

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import log
from ..errors import BackendError
from ..sysview.kernel_state import KernelState
from .base import Applied, drive
from .kdump_discovery import parse_kexec_version

logger = logging.getLogger(__name__)

OUTPUT_CAP = 64 * 1024  # bytes of each of kexec's streams kept: the tail, which carries its complaint
READ_CHUNK = 65536
KILL_GRACE_S = 5.0  # after SIGKILL, how long to wait for the group leader before giving up on reaping it


@dataclass(frozen=True, slots=True)
class Tool:
    """The kexec binary in use and what it says its version is."""

    path: str
    version: tuple[int, int, int] | None
    version_text: str  # kexec's own first line, shown when it cannot be parsed




@dataclass(frozen=True, slots=True)
class Run:
    """One finished (or killed) kexec process."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float
    stopped: bool = False  # killed because the daemon was stopping, before its own timeout



class Tail:
    """The last `cap` bytes written to one stream."""

    def __init__(self, cap: int = OUTPUT_CAP) -> None:
        self._cap = cap
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self._cap:
            del self.data[:len(self.data) - self._cap]

    def text(self) -> str:
        return self.data.decode(errors="replace")


class Child:
    """One kexec process in its own process group, driven without blocking: a Pending's process part.

    Watched: the pidfd (readable once kexec exited) and the stdout and stderr
    pipes until their EOF. Once the pidfd says kexec exited, it is reaped,
    what its pipes hold is read, and the pipes are closed, EOF or not: a
    process it left behind may hold them open for as long as it lives.
    """

    def __init__(self, argv: list[str], timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.argv = tuple(argv)
        self._clock = clock
        self.started_at = clock()
        self._deadline = self.started_at + timeout_s
        env = {**os.environ, "LC_ALL": "C"}  # kexec's strerror() text is matched (EBUSY); keep it English
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, start_new_session=True, env=env)
        except OSError as error:
            raise BackendError(f"{argv[0]}: cannot run: {error.strerror}") from None
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._pipes = {self._proc.stdout.fileno(): Tail(), self._proc.stderr.fileno(): Tail()}
        self._open = set(self._pipes)  # pipes not at EOF yet
        for fd in self._pipes:
            os.set_blocking(fd, False)
        # pidfd_open since Linux commit 32fcb426ec00 ("pid: add pidfd_open()", v5.3), and poll on a pidfd
        # since b53b0b9d9a61 ("pidfd: add polling support", v5.3): the error is an older kernel's
        try:
            self._pidfd = os.pidfd_open(self._proc.pid)
        except OSError as error:
            self._kill()
            self._proc.wait()
            self._close_pipes()
            raise BackendError(f"pidfd_open: {error.strerror}; crashhpd needs Linux 5.3 or later") from None
        self.returncode: int | None = None
        self._killed_at: float | None = None
        self._timed_out = False
        self._stopped = False

    @property
    def done(self) -> bool:
        return self.returncode is not None

    def fds(self) -> list[int]:
        return [] if self.done else [self._pidfd, *sorted(self._open)]

    def ready(self, fd: int) -> None:
        if fd == self._pidfd:
            self._reap()
        elif fd in self._open:
            self._read(fd)

    def deadline(self) -> float | None:
        if self.done:
            return None
        return self._deadline if self._killed_at is None else self._killed_at + KILL_GRACE_S

    def expire(self, now: float) -> None:
        if self._killed_at is None:
            self._timed_out = True
            self._kill()
            self._killed_at = now
            return
        # SIGKILL did not end it within KILL_GRACE_S (stuck in the kernel): stop waiting, let Popen reap it later
        logger.warning("kexec (pid %d) has not died %g s after SIGKILL; no longer waiting for it", self._proc.pid,
                       KILL_GRACE_S, extra=log.fields("kexec-failed", argv=shlex.join(self.argv)))
        self.returncode = -signal.SIGKILL

    def stop(self, by: float) -> None:
        if self._killed_at is None and by < self._deadline:
            self._deadline = by
            self._stopped = True

    def result(self) -> Run:
        """Once done: the finished (or killed) run, its fds closed."""
        assert self.returncode is not None
        os.close(self._pidfd)
        self._close_pipes()
        stdout, stderr = (tail.text() for tail in self._pipes.values())
        return Run(self.argv, self.returncode, stdout, stderr, self._timed_out, self._clock() - self.started_at,
                   self._stopped and self._timed_out)

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # not reaped yet, so the group still exists
            os.killpg(self._proc.pid, signal.SIGKILL)

    def _reap(self) -> None:
        code = self._proc.poll()
        if code is None:
            return
        for fd in list(self._open):
            for _ in range(OUTPUT_CAP // READ_CHUNK + 1):  # what it wrote before exiting, not what others add
                if not self._read(fd):
                    break
        self.returncode = code

    def _read(self, fd: int) -> bool:
        """One read; False when nothing more is there now."""
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self._open.discard(fd)
            return False
        self._pipes[fd].add(chunk)
        return True

    def _close_pipes(self) -> None:
        for pipe in (self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                pipe.close()
        self._open.clear()


def run(argv: list[str], timeout_s: float) -> Run:
    """Run kexec to its end (or its timeout, which kills its process group), outside any event loop."""
    child = Child(argv, timeout_s)
    drive(child)
    return child.result()


class Load(Child):
    """A `kexec -p` under way, as the daemon's loop drives it (a Pending); finish() is the backend's verdict."""

    def __init__(self, argv: list[str], timeout_s: float, outcome: Callable[[Run, KernelState], Applied]) -> None:
        super().__init__(argv, timeout_s)
        self._outcome = outcome

    def finish(self, kernel: KernelState) -> Applied:
        """`kernel`: the kexec state read once the load ended."""
        return self._outcome(self.result(), kernel)


def probe(binary: str | None, timeout_s: float) -> Tool:
    """Find kexec (the config's path or name, else `kexec` on PATH) and ask its version."""
    name = binary or "kexec"
    path = name if "/" in name else shutil.which(name)
    if path is None:
        raise BackendError(f"{name} not found on PATH; install kexec-tools (apt-get install kexec-tools) "
                           "or set kexec.binary")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise BackendError(f"kexec.binary {path}: not an executable file")
    answer = run([path, "--version"], timeout_s)
    if answer.timed_out:
        raise BackendError(f"{path} --version did not finish within {timeout_s:g} s; killed it")
    text = (answer.stdout + answer.stderr).strip()
    version = parse_kexec_version(text)
    if version is None:
        logger.warning("%s --version said %r; its version is unknown, so --hotplug is not used", path, text[:80],
                       extra=log.fields("kexec-load", binary=path))
    return Tool(path, version, text.splitlines()[0] if text else "")
