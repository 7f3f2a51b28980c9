# SPDX-License-Identifier: GPL-2.0-only
"""Logging for crashhpd: journald with structured fields when stderr goes there, plain lines otherwise.

Modules log with the standard library (`logging.getLogger(__name__)`) and
describe an operation with `extra=fields(kind, **values)`. In the journal each
kind carries its own constant MESSAGE_ID, so an admin can follow one kind of
operation across boots (`journalctl MESSAGE_ID=...`), and each value becomes a
CRASHHPD_<NAME> field that scripts can read without parsing the message.
"""

import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from systemd import journal

LOGGER_NAME = "crashhpd"
IDENTIFIER = "crashhpd"
FIELD_PREFIX = "CRASHHPD_"
RECORD_ATTRIBUTE = "crashhpd_operation"  # the LogRecord attribute `fields()` fills in

# One id per kind of operation; never change one, journal queries and catalogs depend on them.
MESSAGE_IDS: Mapping[str, str] = MappingProxyType({
    "started": "5db6517304734f7f964cffa1250fc83b",
    "ready": "9ffe4970f6e64a199f9e343fb8d95f8f",
    "reload": "d3a28e4dc04444728fde7f1e758cf031",
    "config-invalid": "ce2a9b46255f42a99b51c3a7b509ee9b",
    "applied": "911e15bd1f624518affacdbbe47cac21",
    "skipped": "42de5420692e4aa08dffc528e015deb1",
    "apply-failed": "86c6b3c9e26d40adb50eb746650d3820",
    "events-lost": "c239355e67f5408093302ea95e9a25b4",
    "snapshot-failed": "b3ddde0a38f14186bda71835f4b28bdf",
    "header-invalid": "ca04c5b13b7140a1b2bed02dc9f1b3b9",
    "backend-health": "e6a3127e631244b3b4564f960306cbbb",
    "startup-failed": "cfc303eb9253460eb4b1b41a755ed3a4",
    "internal": "0954f1d335bb498093e246731cc6837d",
    "retry": "81349969f83648e5b78c96f76d230001",
    "stopping": "183e696cdd914a07ad5cbae8d15f59f4",
    "kexec-load": "6c21005424b54f8991ffc0531b671e4d",
    "kexec-failed": "26c94598c92b4b4eb6bed392569b6ce8",
    "no-crash-kernel": "52198a5a002642108d9ca291c7c0f995",
    "passive": "9c44778e2e26470a9a5fa1bcc0df82cc",
    "load-limit": "fb2c210bfc4549589ca7b2b1f62528bf",
    "control": "8b9d7c88c0924d80ae8258e1e800c744",
    "kernel-header-stale": "ad5c2f75b8b54bca994fb2d34454a2c9",
    "model-drift": "a697cc5dcae6478582a3ca620e8a257e",
    "kernel-log": "5e664cb9c6ea45bdb8e4c5c62ed17da8",  # /dev/kmsg watched or not, and why
    "udev": "945d70f4be4f4e1795f060b1c091d4d5",
    "crash-cmdline": "90fc5872086247fb812908dd79497486",  # the crash kernel's command line lacks what the host needs
    "kdump-initrd": "02111bb568b1478f8cdf6d6da4c88985",  # the kdump initramfs lacks a module the host's devices need
    "crash-headroom": "b887cf7287da4cd0a8d1378bb0edb29d",  # the crashkernel= reservation is short of the measured need
})

LEVELS: Mapping[str, int] = MappingProxyType({
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
})

# Journal field names are at most 64 characters of A-Z, 0-9 and _, not starting with _ or a digit.
_VALUE_NAME = re.compile(rf"[a-z][a-z0-9_]{{0,{63 - len(FIELD_PREFIX)}}}")


@dataclass(frozen=True, slots=True)
class Operation:
    """What `fields()` attaches to a record: the operation kind and its values, in call order."""

    kind: str
    values: tuple[tuple[str, str], ...]

    @property
    def message_id(self) -> str:
        return MESSAGE_IDS[self.kind]

    def journal_fields(self) -> dict[str, str]:
        return {FIELD_PREFIX + name.upper(): value for name, value in self.values}

    def plain(self) -> str:
        """` key=value` pairs for a terminal; values with blanks are quoted so the line stays splittable."""
        return "".join(f" {name}={_quoted(value)}" for name, value in self.values)


def _quoted(value: str) -> str:
    if value and not any(c.isspace() or c in "\"'=" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def fields(kind: str, **values: object) -> dict[str, Operation]:
    """The `extra=` of a log call that records one operation.

    A value of None is left out, so callers can pass optional facts (a retry
    delay, a generation) without branching. A wrong kind or value name is a
    bug in crashhpd, hence ValueError at the call site rather than a silently
    dropped journal field.
    """
    if kind not in MESSAGE_IDS:
        raise ValueError(f"unknown log operation kind {kind!r}; known: {', '.join(MESSAGE_IDS)}")
    for name in values:
        if not _VALUE_NAME.fullmatch(name):
            raise ValueError(f"log field name {name!r} cannot become a journal field {FIELD_PREFIX}<NAME>")
    kept = tuple((name, str(value)) for name, value in values.items() if value is not None)
    return {RECORD_ATTRIBUTE: Operation(kind, kept)}


def operation_of(record: logging.LogRecord) -> Operation | None:
    return getattr(record, RECORD_ATTRIBUTE, None)


def syslog_priority(levelno: int) -> int:
    """Python levels onto syslog priorities (crit 2, err 3, warning 4, info 6, debug 7)."""
    for threshold, priority in ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6)):
        if levelno >= threshold:
            return priority
    return 7


def plain_line(record: logging.LogRecord, message: str, with_fields: bool) -> str:
    """`crashhpd: <level>: <message>`, without a timestamp: journald and terminals add their own."""
    operation = operation_of(record)
    suffix = operation.plain() if with_fields and operation is not None else ""
    return f"{IDENTIFIER}: {record.levelname.lower()}: {message}{suffix}"


def journal_fields(record: logging.LogRecord) -> dict[str, str | int]:
    """Every field of a record's journal entry but MESSAGE, as journal.send() takes them."""
    entry: dict[str, str | int] = {
        "PRIORITY": str(syslog_priority(record.levelno)),
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "CODE_FILE": record.pathname,
        "CODE_LINE": record.lineno,
        "CODE_FUNC": record.funcName or "",
    }
    operation = operation_of(record)
    if operation is not None:
        entry["MESSAGE_ID"] = operation.message_id
        entry.update(operation.journal_fields())
    return entry


def stderr_is_journal() -> bool:
    """True when systemd connected our stderr to journald (sd_journal_stream_fd(3): $JOURNAL_STREAM = dev:ino of fd 2).

    Comparing with fd 2 itself, not just testing the variable, matters:
    the variable is inherited by children whose stderr was redirected.
    """
    try:
        device, inode = (int(part) for part in os.environ.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(2)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


class _Handler(logging.Handler):
    """Formats once and hands the text on; a log call must never take the daemon down."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.deliver(record, self.format(record))
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        """logging's own report raises when stderr is closed; then the record is dropped silently."""
        try:
            super().handleError(record)
        except Exception:
            pass

    def deliver(self, record: logging.LogRecord, message: str) -> None:
        raise NotImplementedError


class StderrHandler(_Handler):
    def __init__(self, with_fields: bool) -> None:
        super().__init__()
        self.with_fields = with_fields

    def deliver(self, record: logging.LogRecord, message: str) -> None:
        write_stderr(plain_line(record, message, self.with_fields))


class JournalHandler(_Handler):
    def deliver(self, record: logging.LogRecord, message: str) -> None:
        try:
            journal.send(message, **journal_fields(record))
        except OSError:
            # stderr is the journal stream too: the line still arrives, its fields as text
            write_stderr(plain_line(record, message, with_fields=True))


def write_stderr(line: str) -> None:
    """Through sys.stderr at call time, so a replaced stderr (tests, a closed terminal) is honoured."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def setup(level: str = "info") -> None:
    """Installs the one crashhpd handler; calling it again (a config reload) replaces it and the level."""
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; known: {', '.join(LEVELS)}")
    logger = logging.getLogger(LOGGER_NAME)
    for old in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(old)
        old.close()
    handler = JournalHandler() if stderr_is_journal() else StderrHandler(with_fields=level == "debug")
    logger.addHandler(handler)
    logger.setLevel(LEVELS[level])
