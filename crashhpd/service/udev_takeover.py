# SPDX-License-Identifier: GPL-2.0-only
"""Take over from the distribution's udev reload rule, only while crashhpd does its job.

Every distribution reloads the whole crash kernel from a udev rule on each
hotplug event; while crashhpd keeps the header current itself, that rule only
undoes its work. So crashhpd overrides it while such a backend runs, and gives
it back when it stops: the distribution's rule works whenever crashhpd does not.
"""

import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

from .. import log
from ..backends.base import Backend
from ..safefile import SafeDir, read_file
from ..sysview.files import under

logger = logging.getLogger(__name__)

# The first line of every file crashhpd places: only files that start with it are ever removed.
MARKER = b"# crashhpd: placed while it keeps the kdump header current; removed when it stops\n"
# An override an admin put here is theirs: it takes precedence over /run anyway, and crashhpd neither
# places its own beside it nor touches it.
ADMIN_DIR = "etc/udev/rules.d"
UDEV_CONTROL = "run/udev/control"
PACKAGED_DIRS = ("usr/lib/udev/rules.d", "lib/udev/rules.d")  # where distributions install their rules
# Which files were placed, where: the stop path and the next start remove exactly these, whatever the
# configuration says by then (it may have changed, or no longer parse). In crashhpd's RuntimeDirectory.
RECORD_DIR = "run/crashhpd"
RECORD = "udev-overrides.json"
MAX_RULE_BYTES = 64 * 1024
MAX_RECORD_BYTES = 64 * 1024
RELOAD_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What status says about the distribution's rule."""

    inert: bool
    detail: str


def release_recorded(root: str, why: str) -> list[str]:
    """Remove the overrides the record names (each only while it still starts with MARKER), then the record:
    what `crashhpd release-udev` does after a daemon that could not (SIGKILL, the watchdog), needing no
    configuration. Returns the paths removed; never raises."""
    removed = []
    for path in _recorded(root):
        try:
            if read_file(path, MAX_RULE_BYTES).startswith(MARKER):
                os.unlink(path)
                removed.append(path)
        except OSError:
            continue  # absent, or not ours: left alone
    if os.path.isdir(under(root, RECORD_DIR)):  # never created just to find it empty
        try:
            with SafeDir(under(root, RECORD_DIR), 0o755) as d:
                d.remove(RECORD)
        except OSError:
            pass
    if removed:
        _reload_udev(under(root, UDEV_CONTROL))
        logger.info("gave the udev rule back to the distribution (%s): removed %s", why, ", ".join(removed),
                    extra=log.fields("udev"))
    return removed


def _recorded(root: str) -> list[str]:
    if not os.path.isdir(under(root, RECORD_DIR)):
        return []
    try:
        with SafeDir(under(root, RECORD_DIR), 0o755) as d:
            data = d.read(RECORD, MAX_RECORD_BYTES)
        paths = json.loads(data) if data is not None else []
    except (OSError, ValueError):
        return []
    runtime = os.path.realpath(under(root, "run/udev"))  # only ever files under the root's /run/udev
    return [p for p in paths if isinstance(p, str) and os.path.realpath(os.path.dirname(p)).startswith(runtime)]


def _reload_udev(control: str) -> None:
    """`udevadm control --reload`, where the root's udevd runs (its control socket); the rules take effect
    from the next event."""
    udevadm = shutil.which("udevadm")
    if udevadm is None or not os.path.exists(control):
        return
    try:
        subprocess.run([udevadm, "control", "--reload"], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=RELOAD_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        logger.warning("udevadm control --reload failed: %s", err, extra=log.fields("udev"))


class UdevTakeover:
    """crashhpd's comment-only override files (udev/*.rules, shipped in /usr/share/crashhpd/udev), placed
    in /run/udev/rules.d, which takes precedence over the packaged rules and vanishes on reboot.

    The runtime and admin directories are the system's, so they are taken under the configured root like
    /proc and /sys (a test tree gets its own). The unit's ExecStopPost removes the files after a daemon
    that could not (SIGKILL, the watchdog).
    """

    def __init__(self, root: str, source_dir: str, runtime_dir: str, enabled: bool = True) -> None:
        self._root = root
        self._source = source_dir  # crashhpd's own files: not under the root
        self._runtime = under(root, runtime_dir)
        self._admin = under(root, ADMIN_DIR)
        self._control = under(root, UDEV_CONTROL)
        self._packaged = [under(root, d) for d in PACKAGED_DIRS]
        self._enabled = enabled
        self._placed: tuple[str, ...] = ()
        self.verdict = Verdict(False, "not taken over yet")

    def sync(self, backend: Backend, not_keeping: str | None = None) -> Verdict:
        """Place or remove the overrides for the backend that runs now; never raises. `not_keeping`: why
        crashhpd cannot keep the crash kernel current now (the rule is given back until it can).

        Placed while the backend keeps the kernel's header current: `kexec`, or `kernel` on a kernel whose
        distribution rule would still reload (Debian's kdump-tools never checks crash_hotplug); removed on
        a fall back to the sandbox backend.
        """
        name = backend.name
        if not self._enabled:
            self.verdict = Verdict(False, "udev takeover disabled ([udev] takeover = false): "
                                          "the distribution's rule reloads on every event")
        elif backend.capabilities.keeps_kernel_header and not_keeping is not None:
            self._remove(not_keeping)
            self.verdict = Verdict(False, f"given back to the distribution: {not_keeping}")
        elif backend.capabilities.keeps_kernel_header:
            self.verdict = self._place(name)
        else:
            self._remove(f"the {name} backend does not load the crash kernel")
            installed = self._distribution_rules()
            self.verdict = Verdict(False, f"the distribution's rule is active: the {name} backend does not keep "
                                          "the kernel's header current" if installed else
                                          "no distribution reload rule is installed (none of "
                                          f"{', '.join(self._names_or_none())} in {' or '.join(self._packaged)})")
        return self.verdict

    def _distribution_rules(self) -> list[str]:
        """The distribution's reload rules installed here: what the overrides would disable."""
        return [os.path.join(d, n) for d in self._packaged for n in self._names_or_none()
                if os.path.exists(os.path.join(d, n))]

    def _names_or_none(self) -> list[str]:
        try:
            return self._names()
        except OSError:
            return []

    def release(self, why: str) -> None:
        """crashhpd stops: the distribution's rule takes over again."""
        self._remove(why)
        self.verdict = Verdict(False, f"released: {why}")

    def clear_leftovers(self) -> None:
        """At start, before deciding anew: what a daemon that was killed left placed goes."""
        release_recorded(self._root, "left by a crashhpd that did not stop cleanly")

    def _names(self) -> list[str]:
        try:
            return sorted(name for name in os.listdir(self._source) if name.endswith(".rules"))
        except OSError as err:
            raise OSError(f"{self._source}: {err.strerror}") from None

    def _place(self, backend: str) -> Verdict:
        try:
            names = self._names()
            admin = [name for name in names if os.path.lexists(os.path.join(self._admin, name))
                     or self._foreign(name)]
            ours = [name for name in names if name not in admin]
            placed = [os.path.join(self._runtime, name) for name in ours]
            with SafeDir(under(self._root, RECORD_DIR), 0o755) as record:  # first: never a file unrecorded
                record.write(RECORD, json.dumps(sorted(set(placed) | set(_recorded(self._root)))).encode(), 0o644)
            with SafeDir(self._runtime, 0o755) as target:
                for name in ours:
                    text = read_file(os.path.join(self._source, name), MAX_RULE_BYTES)
                    target.write(name, MARKER + text, 0o644)
        except OSError as err:
            logger.warning("cannot take over from the distribution's udev rule: %s", err,
                           extra=log.fields("udev", backend=backend))
            return Verdict(False, f"the distribution's rule is still active: {err}")
        if tuple(ours) != self._placed:
            self._placed = tuple(ours)
            _reload_udev(self._control)
            logger.info("took over from the distribution's udev rule: %s in %s%s", ", ".join(ours) or "nothing",
                        self._runtime, f" ({', '.join(admin)} overridden by the admin in {self._admin})" if admin
                        else "", extra=log.fields("udev", backend=backend))
        where = [f"{', '.join(ours)} in {self._runtime}"] if ours else []
        where += [f"{', '.join(admin)} by the admin ({self._admin} or {self._runtime})"] if admin else []
        return Verdict(True, f"inert while the {backend} backend keeps the header current: overridden by "
                             + "; ".join(where))

    def _remove(self, why: str) -> None:
        """Exactly what the record names (what this daemon, or one killed before it, placed)."""
        release_recorded(self._root, why)
        self._placed = ()

    def _foreign(self, name: str) -> bool:
        """A file of that name in the runtime directory that crashhpd did not put there: someone else's."""
        try:
            return not read_file(os.path.join(self._runtime, name), MAX_RULE_BYTES).startswith(MARKER)
        except FileNotFoundError:
            return False
