# SPDX-License-Identifier: GPL-2.0-only
"""crashhpd.log: operation fields, the plain stderr form and the journald native protocol.

The journal tests bind a real datagram socket where sd_journal_send(3) writes
(journald does not run here) and decode what libsystemd actually sent, so
they fail if a field name, a MESSAGE_ID or the priority mapping changes.
"""

import logging
import os
import select
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from crashhpd import log

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
KINDS = ["started", "ready", "reload", "config-invalid", "applied", "skipped", "apply-failed", "events-lost",
         "snapshot-failed", "retry", "stopping", "kexec-load", "kexec-failed", "no-crash-kernel", "passive",
         "load-limit", "control", "header-invalid", "backend-health", "startup-failed",
         "internal", "udev", "kernel-header-stale", "model-drift", "kernel-log", "crash-cmdline", "kdump-initrd",
         "crash-headroom"]

# Logs one operation with every contract field, a filtered debug line and a multi-line error.
CHILD = '''\
import logging
import sys

from crashhpd import log

log.setup(sys.argv[1])
logger = logging.getLogger("crashhpd.child")


def apply_burst():
    fields = log.fields("applied", generation=12, ranges=41, cpus=3, backend="sandbox", events=7680, duration_us=1534)
    logger.info("applied generation 12", extra=fields)  # APPLY


apply_burst()
logger.debug("debug detail")
logger.error("first line\\nsecond line", extra=log.fields("apply-failed", backend="kexec", reason="busy lock"))
'''

APPLIED_FIELDS = {"CRASHHPD_GENERATION": "12", "CRASHHPD_RANGES": "41", "CRASHHPD_CPUS": "3",
                  "CRASHHPD_BACKEND": "sandbox", "CRASHHPD_EVENTS": "7680", "CRASHHPD_DURATION_US": "1534"}


@pytest.fixture
def crashhpd_logger() -> Iterator[logging.Logger]:
    """setup() changes process-wide logging; give the next test the logger as it was."""
    logger = logging.getLogger(log.LOGGER_NAME)
    handlers, level = logger.handlers[:], logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


@pytest.fixture
def child_script(tmp_path: Path) -> Path:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return script


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET")}
    env.update(extra)
    return env


def run_child(script: Path, level: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script), level], env=child_env(**env),
                          capture_output=True, text=True, timeout=30, check=True)


# --- fields() ---------------------------------------------------------------------------------

def test_every_kind_has_its_own_constant_message_id() -> None:
    assert sorted(log.MESSAGE_IDS) == sorted(KINDS)
    ids = list(log.MESSAGE_IDS.values())
    assert len(set(ids)) == len(ids)
    for message_id in ids:
        assert message_id == uuid.UUID(message_id).hex  # 32 lowercase hex digits, like `systemd-id128 new`
    assert log.MESSAGE_IDS["applied"] == "911e15bd1f624518affacdbbe47cac21"  # journal queries rely on it never changing


def test_fields_become_crashhpd_journal_fields_in_call_order() -> None:
    extra = log.fields("applied", events=7680, generation=12, ranges=41, cpus=3, duration_us=1534, backend="sandbox")
    operation = extra[log.RECORD_ATTRIBUTE]
    assert operation.message_id == log.MESSAGE_IDS["applied"]
    assert list(operation.journal_fields().items()) == [
        ("CRASHHPD_EVENTS", "7680"), ("CRASHHPD_GENERATION", "12"), ("CRASHHPD_RANGES", "41"),
        ("CRASHHPD_CPUS", "3"), ("CRASHHPD_DURATION_US", "1534"), ("CRASHHPD_BACKEND", "sandbox")]


def test_none_values_are_left_out() -> None:
    operation = log.fields("retry", retry_after=None, backend="kexec")[log.RECORD_ATTRIBUTE]
    assert operation.journal_fields() == {"CRASHHPD_BACKEND": "kexec"}


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown log operation kind 'aplied'"):
        log.fields("aplied", generation=1)


@pytest.mark.parametrize("name", ["Generation", "_x", "9lives", "x" * 56])
def test_names_that_cannot_be_journal_fields_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="cannot become a journal field"):
        log.fields("applied", **{name: 1})


def test_longest_accepted_name_fits_the_journal_limit_of_64() -> None:
    operation = log.fields("applied", **{"x" * 55: 1})[log.RECORD_ATTRIBUTE]
    assert [len(name) for name in operation.journal_fields()] == [64]


@pytest.mark.parametrize(("level", "priority"), [(logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
                                                 (logging.INFO, 6), (logging.DEBUG, 7), (25, 6)])
def test_syslog_priority(level: int, priority: int) -> None:
    assert log.syslog_priority(level) == priority


# --- setup() ----------------------------------------------------------------------------------

def test_setup_twice_keeps_one_handler_and_takes_the_new_level(crashhpd_logger: logging.Logger) -> None:
    log.setup("debug")
    log.setup("warning")
    ours = [h for h in crashhpd_logger.handlers if isinstance(h, (log.StderrHandler, log.JournalHandler))]
    assert len(ours) == 1
    assert crashhpd_logger.level == logging.WARNING


def test_setup_refuses_an_unknown_level(crashhpd_logger: logging.Logger) -> None:
    with pytest.raises(ValueError, match="unknown log level 'verbose'"):
        log.setup("verbose")


# --- JOURNAL_STREAM detection -----------------------------------------------------------------

def test_journal_stream_matching_fd2_means_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert log.stderr_is_journal()


@pytest.mark.parametrize("value", ["", "garbage", "1:2:3", "0:0"])
def test_journal_stream_not_matching_fd2_means_stderr(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", value)
    assert not log.stderr_is_journal()


def test_inherited_journal_stream_with_redirected_stderr_means_stderr(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    st = (tmp_path / "elsewhere").open("w")
    other = os.fstat(st.fileno())
    st.close()
    monkeypatch.setenv("JOURNAL_STREAM", f"{other.st_dev}:{other.st_ino}")
    assert not log.stderr_is_journal()


def test_no_journal_stream_means_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert not log.stderr_is_journal()


# --- the stderr form, in a real process -------------------------------------------------------

def test_stderr_form_at_info_has_no_fields_and_no_debug(child_script: Path) -> None:
    result = run_child(child_script, "info")
    assert result.stderr == ("crashhpd: info: applied generation 12\n"
                             "crashhpd: error: first line\nsecond line\n")


def test_stderr_form_at_debug_appends_the_fields(child_script: Path) -> None:
    result = run_child(child_script, "debug")
    assert result.stderr == (
        "crashhpd: info: applied generation 12 generation=12 ranges=41 cpus=3 backend=sandbox events=7680"
        " duration_us=1534\n"
        "crashhpd: debug: debug detail\n"
        'crashhpd: error: first line\nsecond line backend=kexec reason="busy lock"\n')


def test_a_log_call_never_raises(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text(
        "import logging, sys\n"
        "from crashhpd import log\n"
        "log.setup('info')\n"
        "logger = logging.getLogger('crashhpd.x')\n"
        "logger.info('%d ranges', 'not a number')\n"  # a formatting bug
        "logger.info('still logging')\n"
        "sys.stderr.close()\n"  # stderr gone, e.g. the terminal was closed
        "logger.info('into the void')\n"
        "print('alive')\n")
    result = subprocess.run([sys.executable, str(script)], env=child_env(), capture_output=True, text=True,
                            timeout=30)
    assert (result.returncode, result.stdout) == (0, "alive\n")
    assert "--- Logging error ---" in result.stderr  # logging's own report, not an exception
    assert result.stderr.endswith("crashhpd: info: still logging\n")


# --- the journal form, over the native protocol -----------------------------------------------

def decode_native(datagram: bytes) -> dict[str, str]:
    """journald's native protocol: KEY=value lines, or KEY\\n<le64 size><bytes>\\n for values with newlines."""
    entry: dict[str, str] = {}
    rest = datagram
    while rest:
        head, _, rest = rest.partition(b"\n")
        if b"=" in head:
            key, _, value = head.partition(b"=")
        else:
            key = head
            (size,) = struct.unpack("<Q", rest[:8])
            value, end, rest = rest[8:8 + size], rest[8 + size:9 + size], rest[9 + size:]
            assert end == b"\n", "binary field not terminated by a newline"
        assert key.decode() not in entry, f"field {key!r} sent twice"
        entry[key.decode()] = value.decode()
    return entry


@pytest.fixture
def journal_socket() -> Iterator[socket.socket]:
    """A datagram socket at journald's address; SO_PASSCRED tells which process sent each entry."""
    if os.geteuid() != 0:
        pytest.skip("needs root to bind /run/systemd/journal/socket")
    if JOURNAL_SOCKET.exists():
        pytest.skip(f"{JOURNAL_SOCKET} exists: journald (or another test run) owns it")
    created = [d for d in (JOURNAL_SOCKET.parent.parent, JOURNAL_SOCKET.parent) if not d.exists()]
    for directory in created:
        directory.mkdir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        try:
            sock.bind(str(JOURNAL_SOCKET))
        except OSError as err:
            pytest.skip(f"cannot bind {JOURNAL_SOCKET}: {err}")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        yield sock
    finally:
        sock.close()
        JOURNAL_SOCKET.unlink(missing_ok=True)
        for directory in reversed(created):
            directory.rmdir()


def sender_pid(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS):
            return struct.unpack("iII", data[:12])[0]
    return None


def journal_entries_of(sock: socket.socket, child: subprocess.Popen[bytes]) -> list[dict[str, str]]:
    """Reads while the child runs: a unix datagram queue holds only a few entries before the sender blocks."""
    entries = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        exited = child.poll() is not None
        if select.select([sock], [], [], 0 if exited else 0.05)[0]:
            data, ancillary, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(12))
            if sender_pid(ancillary) == child.pid:
                entries.append(decode_native(data))
        elif exited:
            return entries
    raise AssertionError("the logging child did not finish")


def log_to_journal(sock: socket.socket, script: Path, level: str, stderr_path: Path,
                   stream_of: Path | None = None) -> list[dict[str, str]]:
    """Runs the child with stderr on a file and $JOURNAL_STREAM naming that file, as systemd does for a service."""
    with stderr_path.open("wb") as stderr:
        st = os.stat(stream_of or stderr_path)
        child = subprocess.Popen([sys.executable, str(script), level], stderr=stderr,
                                 env=child_env(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}"))
        entries = journal_entries_of(sock, child)
    assert child.wait() == 0
    return entries


@pytest.mark.root
def test_journal_entries_carry_message_id_priority_and_every_field(journal_socket: socket.socket, tmp_path: Path,
                                                                   child_script: Path) -> None:
    stderr = tmp_path / "stderr"
    applied, failed = log_to_journal(journal_socket, child_script, "info", stderr)  # the debug line is filtered
    apply_line = next(n for n, line in enumerate(CHILD.splitlines(), 1) if line.endswith("# APPLY"))
    assert applied == {
        "MESSAGE": "applied generation 12",
        "MESSAGE_ID": "911e15bd1f624518affacdbbe47cac21",
        "PRIORITY": "6",
        "SYSLOG_IDENTIFIER": "crashhpd",
        "CODE_FILE": str(child_script),
        "CODE_LINE": str(apply_line),
        "CODE_FUNC": "apply_burst",
        **APPLIED_FIELDS,
    }
    assert failed["MESSAGE"] == "first line\nsecond line"  # travels in the binary-safe form
    assert failed["MESSAGE_ID"] == log.MESSAGE_IDS["apply-failed"]
    assert failed["PRIORITY"] == "3"
    assert {k: v for k, v in failed.items() if k.startswith("CRASHHPD_")} == {
        "CRASHHPD_BACKEND": "kexec", "CRASHHPD_REASON": "busy lock"}
    assert stderr.read_bytes() == b""  # nothing duplicated on the stream


@pytest.mark.root
def test_journal_entry_without_fields_has_no_message_id(journal_socket: socket.socket, tmp_path: Path,
                                                        child_script: Path) -> None:
    entries = log_to_journal(journal_socket, child_script, "debug", tmp_path / "stderr")
    assert [e["MESSAGE"] for e in entries] == ["applied generation 12", "debug detail", "first line\nsecond line"]
    debug = entries[1]
    assert debug["PRIORITY"] == "7"
    assert "MESSAGE_ID" not in debug
    assert not any(key.startswith("CRASHHPD_") for key in debug)


@pytest.mark.root
def test_journal_stream_of_another_file_keeps_the_stderr_form(journal_socket: socket.socket, tmp_path: Path,
                                                              child_script: Path) -> None:
    other = tmp_path / "other"
    other.write_bytes(b"")
    stderr = tmp_path / "stderr"
    assert log_to_journal(journal_socket, child_script, "info", stderr, stream_of=other) == []
    assert stderr.read_text().startswith("crashhpd: info: applied generation 12\n")


@pytest.mark.root
def test_a_dead_journal_socket_falls_back_to_the_stream_with_fields(journal_socket: socket.socket, tmp_path: Path,
                                                                    child_script: Path) -> None:
    journal_socket.close()  # the path stays, nobody listens: sendmsg fails with ECONNREFUSED, as after a journald crash
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as err:
        st = os.fstat(err.fileno())
        subprocess.run([sys.executable, str(child_script), "info"], stderr=err, timeout=30, check=True,
                       env=child_env(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}"))
    assert stderr.read_text().splitlines()[0] == (
        "crashhpd: info: applied generation 12 generation=12 ranges=41 cpus=3 backend=sandbox events=7680"
        " duration_us=1534")
