# SPDX-License-Identifier: GPL-2.0-only
"""The kexec backend: reload the crash kernel with kexec-tools, once per burst, never unloading first.

Where the kernel cannot update the loaded header in place (Debian 12: Linux 6.1,
kexec-tools 2.0.25) the only way in is a full `kexec -p`. Distributions run it
per udev event after a `kexec -p -u`, leaving no crash kernel in between; this
backend reloads once per debounced burst, as a child of the loop
(kexec_process.py), and never unloads.
"""

import contextlib
import hashlib
import logging
import os
import shlex
import time
from dataclasses import replace
from typing import NoReturn

from .. import log
from ..config import KexecConfig
from ..elfcorehdr.layout import LayoutName
from ..errors import BackendError
from ..sysview.files import under
from ..sysview.kernel_state import CRASH_LOADED, LOAD_LIMIT, NEW_NAMES, KernelState, read_kernel_state
from .base import Applied, Backoff, Capabilities, Health, Pending, settle
from .kdump_discovery import CrashKernel, discover
from .kexec_cmdline import completed, for_reload, missing, needed
from .kexec_process import Load, Run, Tool, probe
from .kexec_state import Record, StateStore

logger = logging.getLogger(__name__)

HOTPLUG_MIN_VERSION = (2, 0, 28)  # the first kexec-tools with --hotplug
EBUSY_TEXT = "Device or resource busy"  # kexec_load's EBUSY: another loader holds the kexec lock
PROBE_TIMEOUT_S = 5.0  # `kexec --version`, the one kexec run inside the loop: milliseconds, never a watchdog's worth
STDERR_CHARS = 240  # enough of kexec's complaint for one readable line


# --- pure decisions ---------------------------------------------------------------------------


def hotplug_blocker(wanted: bool, version: tuple[int, int, int] | None, kernel_has_hotplug: bool,
                    file_load: bool) -> str | None:
    """Why `--hotplug` is not used, or None when it is.

    With `-s` the kernel updates kexec_file_load images by itself, so the flag
    only matters for kexec_load. It sets KEXEC_UPDATE_ELFCOREHDR, and sizes the
    segment from /sys/kernel/crash_elfcorehdr_size, both since Linux commit
    a72bbec70da2 ("crash: hotplug support for kexec_load()", v6.6).
    """
    if not wanted:
        return "not enabled (kexec.hotplug = false)"
    if file_load:
        return "not needed with kexec_file_load (-s): the kernel updates those images itself"
    if version is None:
        return "kexec's version is unknown; --hotplug needs kexec-tools 2.0.28 or later"
    if version < HOTPLUG_MIN_VERSION:
        return f"kexec-tools {'.'.join(map(str, version))} is older than 2.0.28"
    if not kernel_has_hotplug:
        return "the kernel has no /sys/kernel/crash_elfcorehdr_size (needs Linux 6.6+ with CONFIG_CRASH_HOTPLUG)"
    return None


def load_argv(binary: str, crash: CrashKernel, file_load: bool, hotplug: bool) -> list[str]:
    """`kexec -p` replacing the loaded crash image in one call: never `-u` first, never a shell.

    The image is replaced inside one kexec_load call, whose own gap is the copy
    (22 ms sampled on a 6.1 guest under TCG, tests/bench/guest_hotplug.py).
    """
    argv = [binary, "-p"]
    # -s: kexec_file_load, the kernel builds the header; -c: kexec_load, which a plain -p no longer means
    # since kexec-tools 2.0.27 (it tries kexec_file_load first), and the kexec-tools layout models
    argv.append("-s" if file_load else "-c")
    if hotplug:
        argv.append("--hotplug")
    if crash.initrd is not None:
        argv.append(f"--initrd={crash.initrd}")
    argv.append(f"--command-line={crash.cmdline}")
    argv.append(crash.kernel)
    return argv


def complaint(run: Run) -> str:
    """kexec's own words in one line: its last stderr line, with the lines before it while they fit."""
    lines = [line.strip() for line in (run.stderr or run.stdout).splitlines() if line.strip()]
    kept: list[str] = []
    for line in reversed(lines):
        if kept and len(line) + sum(len(k) + 2 for k in kept) > STDERR_CHARS:
            break
        kept.insert(0, line)
    return "; ".join(kept) or "no message"


def failure_message(run: Run, timeout_s: float) -> str:
    name = f"{os.path.basename(run.argv[0])} -p"
    if run.stopped:
        return f"{name} was still running when crashhpd stopped; killed its process group"
    if run.timed_out:
        return f"{name} did not finish within {timeout_s:g} s; killed its process group"
    if EBUSY_TEXT in run.stderr:
        return f"{name}: another loader holds the kexec lock ({EBUSY_TEXT})"
    return f"{name} failed with exit status {run.returncode}: {complaint(run)}"


# --- the backend --------------------------------------------------------------------------------


class KexecBackend:
    name = "kexec"
    layout: LayoutName = "kexec-tools"
    capabilities = Capabilities(reloads=True, keeps_kernel_header=True)
    recovery = None  # it is the one that reloads

    def __init__(self, cfg: KexecConfig, root: str, state_dir: str, kernel: KernelState,
                 defer_to_the_kernel: bool = True) -> None:
        """`defer_to_the_kernel`: record instead of reloading while the kernel updates the header itself
        (crash_hotplug reads 1); False for the passive backend's recovery, which reloads because it did not."""
        self._cfg = cfg
        self._defer = defer_to_the_kernel
        self._root = root
        self._store = StateStore(state_dir)
        self._tool: Tool | None = None
        self._probe_error: str | None = None
        self._backoff = Backoff()
        self._retried_lost = False  # the one immediate retry after the kernel freed the old image is spent
        self._failures = 0  # consecutive failed loads
        self._failure: str | None = None
        self._retry_after: float | None = None
        self._last_run: Run | None = None
        self._argv: list[str] | None = None
        self._passive = False
        self._record: Record | None = None
        self._header: bytes | None = None
        self._generation = 0
        # the command line of a load someone else made, completed: (the discovered one then, the one loaded)
        self._completed: tuple[str, str] | None = None
        self._completed_for: set[tuple[str | None, str]] = set()  # (boot id, command line read): reloaded once
        self._restore(kernel)
        self._try_probe()

    # --- Backend protocol ---------------------------------------------------------------------

    def loaded(self, kernel: KernelState) -> bytes | None:
        """The model of the last successful load, unless the kernel says nothing is loaded now."""
        if self._header is None:
            return None
        if not self._cfg.dry_run and kernel.crash_loaded == 0:
            return None
        return self._header

    def state(self) -> Applied | None:
        record = self._record
        if record is None:
            return None
        return Applied(record.generation, record.sha256, record.header_size, None, record.applied_at)

    def capacity(self, kernel: KernelState) -> int | None:
        """None: every reload sizes a new segment, so there is no fixed room to outgrow."""
        return None

    def begin(self, header: bytes, kernel: KernelState) -> Applied | Pending:
        """Start reloading the crash kernel once for this header: a Load the loop drives to its end.

        BackendError (with a retry delay) on any failure, here or from the Load's finish().
        """
        if kernel.updates_header and self._defer:
            return self._record_passive(header, kernel)
        self._passive = False
        lacking = self.cmdline_lacks(kernel)
        try:
            self._check_load_limit(kernel)
            argv = self._argv_now(kernel, kernel.crash_cmdline if lacking else None)
        except BackendError as err:
            self._failure, self._retry_after = str(err), err.retry_after
            raise
        if self._cfg.dry_run:
            logger.warning("dry run: would run %s", shlex.join(argv),
                           extra=log.fields("kexec-load", argv=shlex.join(argv), dry_run=1, backend=self.name))
            self._clear_failures()
            return self._remember(header, argv, kernel, persist=False)
        if self._failures:
            logger.info("retrying the crash kernel reload (attempt %d)", self._failures + 1,
                        extra=log.fields("retry", attempt=self._failures + 1, backend=self.name))
        try:
            return Load(argv, self._cfg.timeout_s, lambda result, after: self._loaded(result, header, argv, after))
        except BackendError as err:  # kexec could not be started at all (removed since it was probed)
            self._tool = None  # look for it again on the next try
            self._failed_to_start(str(err))
            raise BackendError(str(err), retry_after=self._retry_after) from None

    def apply(self, header: bytes, kernel: KernelState) -> Applied:
        """Reload the crash kernel once for this header, waiting for kexec: begin() and settle()."""
        return settle(self.begin(header, kernel), lambda: read_kernel_state(self._root))

    def load_changed(self, kernel: KernelState) -> str | None:
        """The load configured now against the one this daemon (or the one before it, this boot) put in force:
        adding `[kexec] append`, another kernel or initrd, file_load or another kexec is one reload."""
        lacking = self.cmdline_lacks(kernel)
        if lacking:
            return (f"the crash kernel's command line lacks {' '.join(lacking)}, which this host needs "
                    "(it can hot-add memory through ACPI): reloading once with it appended")
        record = self._record
        if not self._defer:
            return None  # the passive backend's recovery: it reloads only for a stale header or for the above
        if record is None or kernel.updates_header or self._cfg.dry_run:
            return None  # loaded by someone else (or not reloaded by crashhpd now): nothing to compare with
        try:
            wanted = self._argv_for(kernel, self._discover(), self._probe())
        except BackendError:
            return None  # the load itself will say what is wrong, when one is due
        if tuple(wanted) == record.argv:
            return None
        return f"the load configured now differs from the one in force: {shlex.join(wanted)}"

    def cmdline_lacks(self, kernel: KernelState) -> list[str]:
        """What the loaded crash kernel's command line (as the snapshot read it) lacks that this host needs,
        where crashhpd is to reload for it: once per command line and boot, unless `complete_cmdline` is off."""
        if (not self._cfg.complete_cmdline or kernel.crash_loaded != 1 or kernel.crash_cmdline is None
                or (kernel.updates_header and self._defer)
                or (kernel.boot_id, kernel.crash_cmdline) in self._completed_for):
            return []
        return missing(kernel.crash_cmdline, needed(kernel.acpi_memory_devices))

    def health(self, kernel: KernelState) -> Health:
        extra = self._extra(kernel)
        if self._probe_error is not None:
            return Health(False, self._probe_error, extra)
        ok, detail = self._verdict(kernel)
        return Health(ok, detail, {**extra, "kernel_updates_header": kernel.updates_header})

    # --- apply, step by step ----------------------------------------------------------------------

    def _record_passive(self, header: bytes, kernel: KernelState) -> Applied:
        """The kernel rewrites the header itself now (crash_hotplug reads 1): a reload would only hurt."""
        if not self._passive:
            logger.info("the kernel updates the header itself now (crash_hotplug reads 1); crashhpd stops reloading, "
                        "and the next start picks the passive kernel backend",
                        extra=log.fields("passive", backend=self.name))
            self._passive = True
        self._clear_failures()
        return self._remember(header, self._argv or [], kernel, persist=not self._cfg.dry_run)

    def _check_load_limit(self, kernel: KernelState) -> None:
        """Never spend the kernel's last allowed crash load on an update: an admin may need it.

        kexec_load_limit_panic exists since Linux commit a42aaad2e47b ("kexec: introduce sysctl
        parameters kexec_load_limit_*", v6.3); without it (None) there is no limit.
        """
        limit = kernel.load_limit
        if limit is None or limit < 0 or limit > 1:
            return
        message = (f"{under(self._root, LOAD_LIMIT)} reads {limit}: "
                   f"{'no crash load is' if limit == 0 else 'only one more crash load is'} allowed; "
                   "crashhpd will not spend it on an update")
        logger.error("%s", message, extra=log.fields("load-limit", load_limit=limit, backend=self.name))
        raise BackendError(message, retry_after=None)

    def _argv_now(self, kernel: KernelState, complete: str | None = None) -> list[str]:
        """Everything is looked up again on each load, so fixing a config file needs no restart. `complete`:
        the command line read from a load that lacks what the host needs, to load again completed."""
        crash = self._discover()  # what the distribution would load: the admin's to fix where it cannot be found
        try:
            tool = self._probe()
        except BackendError as err:  # kexec missing or broken: worth trying again, backed off
            self._failed_to_start(str(err))
            raise BackendError(str(err), retry_after=self._retry_after) from None
        if complete is not None:
            self._completed_for.add((kernel.boot_id, complete))
            self._completed = (crash.cmdline, for_reload(complete, needed(kernel.acpi_memory_devices)))
            logger.warning("the crash kernel loaded lacks %s, which this host needs; reloading once with the command "
                           "line read from it, completed: %s", " ".join(missing(complete, needed(
                               kernel.acpi_memory_devices))), self._completed[1],
                           extra=log.fields("crash-cmdline", cmdline=self._completed[1], backend=self.name))
        self._argv = self._argv_for(kernel, crash, tool)
        return self._argv

    def _discover(self) -> CrashKernel:
        cfg = self._cfg
        return discover(self._root, cfg.kernel, cfg.initrd, cfg.cmdline, cfg.append)

    def _argv_for(self, kernel: KernelState, crash: CrashKernel, tool: Tool) -> list[str]:
        """The `kexec -p` the configuration asks for now, with this crash kernel and this kexec."""
        file_load = self._cfg.file_load or kernel.kexec_load_forbidden
        hotplug = self._hotplug_blocker(tool, file_load, kernel) is None
        return load_argv(tool.path, replace(crash, cmdline=self._cmdline_for(kernel, crash)), file_load, hotplug)

    def _cmdline_for(self, kernel: KernelState, crash: CrashKernel) -> str:
        """The discovered command line with what this host needs; the completed one read from the kernel
        instead, while the configuration still discovers what it did when that was loaded."""
        if self._completed is not None and self._completed[0] == crash.cmdline:
            return self._completed[1]
        return completed(crash.cmdline, needed(kernel.acpi_memory_devices))

    def _probe(self) -> Tool:
        """The kexec binary, asked once; a binary that was missing is looked for again on the next load."""
        if self._tool is None:
            try:
                self._tool = probe(self._cfg.binary, min(self._cfg.timeout_s, PROBE_TIMEOUT_S))
            except BackendError as err:
                self._probe_error = str(err)
                raise
            self._probe_error = None
        return self._tool

    def _try_probe(self) -> None:
        """At start-up, so that health can name the binary and its version before the first load."""
        with contextlib.suppress(BackendError):
            self._probe()

    def _hotplug_blocker(self, tool: Tool | None, file_load: bool, kernel: KernelState) -> str | None:
        return hotplug_blocker(self._cfg.hotplug, tool.version if tool else None, kernel.elfcorehdr_size is not None,
                               file_load)

    def _loaded(self, result: Run, header: bytes, argv: list[str], kernel: KernelState) -> Applied:
        """kexec has exited (or was killed): account for it as the load's outcome; `kernel` is read after it."""
        self._last_run = result
        if result.returncode != 0 or result.timed_out:
            self._fail(result, kernel)
        self._succeeded(result)
        return self._remember(header, argv, kernel, persist=True)

    def _failed_to_start(self, message: str) -> None:
        """Counted and backed off like a failed load: the next burst, or the retry timer, tries again."""
        self._failures += 1
        self._retry_after = self._backoff.take()
        self._failure = message
        logger.error("%s; retrying in %g s", message, self._retry_after,
                     extra=log.fields("kexec-failed", retry_after_s=self._retry_after, backend=self.name))

    def _fail(self, result: Run, kernel: KernelState) -> NoReturn:
        """Count, log and raise; the retry delay depends on whether a crash kernel is still loaded after it
        (the failed load itself may have freed the image)."""
        self._failures += 1
        message = failure_message(result, self._cfg.timeout_s)
        if kernel.crash_loaded == 0:
            retry = self._backoff.take() if self._retried_lost else 0.0
            self._retried_lost = True
            message = f"NO CRASH KERNEL LOADED: {message}"
            logger.error("%s; retrying in %g s", message, retry,
                         extra=log.fields("no-crash-kernel", argv=shlex.join(result.argv), exit=result.returncode,
                                          retry_after_s=retry, backend=self.name))
        else:
            retry = self._backoff.take()
            level = logging.WARNING if EBUSY_TEXT in result.stderr else logging.ERROR
            logger.log(level, "%s; retrying in %g s", message, retry,
                       extra=log.fields("kexec-failed", argv=shlex.join(result.argv), exit=result.returncode,
                                        retry_after_s=retry, backend=self.name))
        self._failure = message
        self._retry_after = retry
        raise BackendError(message, retry_after=retry)

    def _succeeded(self, result: Run) -> None:
        logger.info("reloaded the crash kernel in %.2f s: %s", result.duration_s, shlex.join(result.argv),
                    extra=log.fields("kexec-load", argv=shlex.join(result.argv), generation=self._generation + 1,
                                     duration_us=int(result.duration_s * 1e6), backend=self.name))
        self._clear_failures()

    def _clear_failures(self) -> None:
        self._backoff.reset()
        self._retried_lost = False
        self._failures = 0
        self._failure = None
        self._retry_after = None

    def _remember(self, header: bytes, argv: list[str], kernel: KernelState, persist: bool) -> Applied:
        self._generation += 1
        self._record = Record(self._generation, hashlib.sha256(header).hexdigest(), len(header), time.time(),
                              tuple(argv), kernel.boot_id)
        self._header = header
        if persist:
            self._store.save(self._record, header)
        applied = self.state()
        assert applied is not None
        return applied

    # --- start-up and health ----------------------------------------------------------------------

    def _restore(self, kernel: KernelState) -> None:
        """Pick up the last load of this boot, so a restart does not reload for nothing."""
        found = self._store.load()
        if found is None:
            return
        record, header = found
        self._generation = record.generation
        self._argv = list(record.argv)
        if record.boot_id != kernel.boot_id:
            logger.info("%s is from an earlier boot; the first burst reloads", self._store.state_path,
                        extra=log.fields("kexec-load", generation=record.generation))
            return
        self._record, self._header = record, header

    def _verdict(self, kernel: KernelState) -> tuple[bool, str]:
        loaded, limit = kernel.crash_loaded, kernel.load_limit
        if loaded is None:
            return False, (f"{under(self._root, CRASH_LOADED)} (or {under(self._root, NEW_NAMES[CRASH_LOADED])}) is "
                           "missing: this kernel has no kexec support")
        if loaded == 0:
            return False, "NO CRASH KERNEL LOADED" + (f": {self._failure}" if self._failure else "")
        if limit is not None and 0 <= limit <= 1:
            return False, f"kexec_load_limit_panic reads {limit}: crashhpd will not spend the last crash load"
        if self._failure:
            retry = f"; retrying in {self._retry_after:g} s" if self._retry_after is not None else ""
            return False, f"last reload failed: {self._failure}{retry}"
        if self._store.problem is not None:
            return False, self._store.problem
        if kernel.updates_header:
            return True, ("the kernel updates the header now (crash_hotplug reads 1); crashhpd does not reload, "
                          "and the next start picks the passive kernel backend")
        if self._record is None:
            return True, "a crash kernel is loaded; crashhpd has not reloaded it yet"
        return True, f"crash kernel loaded by crashhpd, generation {self._record.generation}"

    def _extra(self, kernel: KernelState) -> dict[str, object]:
        tool = self._tool
        last = self._last_run
        file_load = self._cfg.file_load or "-s" in (self._argv or [])
        return {
            "binary": tool.path if tool else self._cfg.binary,
            "version": _version_text(tool),
            "argv": list(self._argv) if self._argv else None,
            "crash_loaded": kernel.crash_loaded,
            "load_limit": kernel.load_limit,
            "last_exit": last.returncode if last else None,
            "backoff_s": self._retry_after if self._retry_after is not None else 0.0,
            "hotplug": self._hotplug_blocker(tool, file_load, kernel) or "used",
            "dry_run": self._cfg.dry_run,
        }


def _version_text(tool: Tool | None) -> str | None:
    if tool is None:
        return None
    return ".".join(map(str, tool.version)) if tool.version else tool.version_text or None
