# SPDX-License-Identifier: GPL-2.0-only
"""What the kexec backend's last successful load put in force, kept across a restart of crashhpd."""

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass

from .. import log
from ..abi.elf import MAX_HEADER_SIZE
from ..safefile import SafeDir, describe

logger = logging.getLogger(__name__)

STATE_FILE = "kexec-state.json"  # names distinct from the sandbox backend's, which shares state_dir
HEADER_FILE = "kexec-elfcorehdr"
DIR_MODE = 0o700
FILE_MODE = 0o600  # the model header is as secret as /proc/kallsyms and /proc/iomem
STATE_LIMIT = 64 * 1024  # the record is a few hundred bytes; its argv is one command line


@dataclass(frozen=True, slots=True)
class Record:
    """What the last successful load put in force, as persisted under state_dir."""

    generation: int
    sha256: str
    header_size: int
    applied_at: float
    argv: tuple[str, ...]
    boot_id: str | None  # a state from an earlier boot says nothing about what is loaded now


class StateStore:
    """The last successful load's model header and record, each replaced whole (header first, then record).

    Both go through crashhpd.safefile: 0600 in a directory that must be
    root's and writable by nobody else (the header holds the KASLR'd kernel
    address and the RAM map). Whatever goes wrong with them only costs one
    reload, so nothing here raises: a refusal (a symlink, a FIFO, a file too
    large, a directory someone else controls) is logged and means no state.
    """

    def __init__(self, state_dir: str) -> None:
        self.state_path = os.path.join(state_dir, STATE_FILE)
        self.header_path = os.path.join(state_dir, HEADER_FILE)
        self._dir = state_dir
        self.problem: str | None = None  # why the last save failed, until one succeeds

    def load(self) -> tuple[Record, bytes] | None:
        """The persisted load, or None when there is none or it does not hold together."""
        try:
            with SafeDir(self._dir, DIR_MODE) as d:
                d.remove_temporaries((STATE_FILE, HEADER_FILE))  # of a save that was killed
                state = d.read(STATE_FILE, STATE_LIMIT)
                header = d.read(HEADER_FILE, MAX_HEADER_SIZE)
        except OSError as err:
            logger.warning("%s; the next burst reloads", describe(err, self._dir), extra=log.fields("kexec-load"))
            return None
        if state is None or header is None:
            return None
        try:
            raw = json.loads(state)
            record = Record(**{**raw, "argv": tuple(raw["argv"])})
        except (ValueError, TypeError, KeyError) as err:
            logger.warning("%s: unreadable (%s); the next burst reloads", self.state_path, err,
                           extra=log.fields("kexec-load"))
            return None
        if hashlib.sha256(header).hexdigest() != record.sha256:
            logger.warning("%s does not match %s; the next burst reloads", self.header_path, self.state_path,
                           extra=log.fields("kexec-load"))
            return None
        return record, header

    def save(self, record: Record, header: bytes) -> None:
        """Persist; a failure only costs one needless reload after a restart, so it is logged, not raised,
        and said in `problem` (the backend's health) until a save succeeds again."""
        try:
            with SafeDir(self._dir, DIR_MODE) as d:
                d.write(HEADER_FILE, header, FILE_MODE)
                d.write(STATE_FILE, json.dumps(asdict(record)).encode(), FILE_MODE)
        except OSError as err:
            self.problem = f"cannot save the kexec state: {describe(err, self._dir)}; a restart will reload once"
            logger.warning("%s", self.problem, extra=log.fields("kexec-load"))
            return
        self.problem = None
