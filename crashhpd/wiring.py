# SPDX-License-Identifier: GPL-2.0-only
"""`crashhpd run`: every part of the daemon built in one place and handed to the loop.

The loop (service/daemon.py) never constructs anything itself: the monitor,
the backend, the control server and the metrics come from here, so tests can
build a loop around parts of their own (a fake event source, a pyudev
context of their choosing), and a SIGHUP builds the parts of the new
configuration with the same function before anything is swapped.
"""

import logging
import selectors
import sys
from functools import partial

import pyudev

from . import backends, log
from . import config as config_mod
from .backends.base import Backend
from .config import Config
from .control.handlers import Dispatcher
from .control.server import ControlError, ControlServer, SocketTaken
from .elfcorehdr.layout import CpuSet, Layout, preset
from .errors import ConfigError, CrashhpdError
from .service.daemon import Daemon
from .service.metrics import Metrics
from .service.monitor import EventMonitor
from .service.notify import Notifier
from .service.parts import Parts
from .service.status import ControlCounters
from .service.udev_takeover import UdevTakeover
from .sysview.kernel_state import KernelState
from .sysview.loaded_header import LoadedHeaderReader
from .sysview.snapshot import read_boot_constants, read_snapshot

logger = logging.getLogger(__name__)

EX_CONFIG = 78  # sysexits.h: configuration error
EX_UNAVAILABLE = 69  # sysexits.h: another crashhpd answers on the control socket; not a configuration error
EX_FATAL = 1
# what decides the backend: a change of any of these builds a new one on SIGHUP
BACKEND_KEYS = ("root", "backend", "state_dir", "sandbox", "kexec")


def layout_for(cfg: Config, backend: Backend, kernel: KernelState) -> Layout:
    """The config's layout, else the one the backend's loader produces.

    For the passive backend the CPU set is the running kernel's, whatever `cpus` says: a note for every
    possible CPU since Linux commit a396d0f81b1c ("crash: change crash_prepare_elf64_headers() to
    for_each_possible_cpu()", v6.6), for every present CPU before; the kernels with it are those that
    publish crash_hotplug, since 88a6f8994421 ("crash: memory and CPU hotplug sysfs attributes", v6.6).
    `cpus` chooses only for the sandbox, which stands in for no kernel in particular.
    """
    name = cfg.layout or backend.layout
    if name != "kernel":
        return preset(name, None, cfg.page_offset)
    if backend.name == "kernel":
        cpus: CpuSet = "present" if kernel.crash_hotplug_cpu is None and kernel.crash_hotplug_memory is None \
            else "possible"
        return preset(name, cpus, cfg.page_offset)
    return preset(name, cfg.cpus, cfg.page_offset)


def build_parts(cfg: Config, old: Parts | None, context: pyudev.Context | None = None) -> Parts:
    """The parts `cfg` asks for; whatever `old` already has right for it is kept, not rebuilt.

    Nothing is opened or swapped here: a failure (CrashhpdError) leaves the
    running parts exactly as they were.
    """
    same_root = old is not None and old.cfg.root == cfg.root
    boot = old.boot if old is not None and same_root else read_boot_constants(cfg.root)
    snapshot = read_snapshot(cfg.root, boot)
    if old is not None and all(getattr(old.cfg, key) == getattr(cfg, key) for key in BACKEND_KEYS):
        backend = old.backend
    else:
        backend = backends.create(cfg, snapshot)
    if old is not None and old.cfg.monitor == cfg.monitor:
        monitor = old.monitor
    else:
        monitor = EventMonitor(cfg.monitor.source, cfg.monitor.receive_buffer_bytes, context)
    udev = old.udev if old is not None and old.cfg.udev == cfg.udev else \
        UdevTakeover(cfg.root, cfg.udev.rules, cfg.udev.runtime_dir, enabled=cfg.udev.takeover)
    reader = old.header_reader if old is not None and same_root else LoadedHeaderReader(cfg.root)
    return Parts(cfg, boot, backend, layout_for(cfg, backend, snapshot.kernel), monitor, udev, reader)


def control_server(cfg: Config, selector: selectors.BaseSelector, daemon: Daemon) -> ControlServer:
    """The admin socket in the loop's selector, answering through the op table for this daemon."""
    counters = ControlCounters()
    return ControlServer(cfg.control, selector, Dispatcher(daemon, counters), counters)


def run(config_path: str | None, root_override: str | None, context: pyudev.Context | None = None) -> int:
    """The daemon's whole life; returns the exit status (78 for an invalid config)."""
    try:
        cfg = config_mod.load(config_path, root_override)
    except ConfigError as err:
        for problem in err.problems:
            print(f"crashhpd: invalid configuration: {problem}", file=sys.stderr)
        return EX_CONFIG
    log.setup(cfg.log.level)
    selector = selectors.DefaultSelector()
    try:
        build = partial(build_parts, context=context)
        daemon = Daemon(build(cfg, None), build, selector, Metrics(), Notifier(), config_path, root_override,
                        config_mod.load)
        return daemon.run(control_server(cfg, selector, daemon))
    except SocketTaken as err:
        logger.critical("cannot start: %s", err, extra=log.fields("startup-failed"))
        return EX_UNAVAILABLE
    except ControlError as err:  # a missing group or a socket path that is not a socket: restarting cannot fix either
        logger.critical("cannot start: %s", err, extra=log.fields("startup-failed"))
        return EX_CONFIG
    except (CrashhpdError, OSError) as err:
        logger.critical("cannot start: %s", err, extra=log.fields("startup-failed"))
        return EX_FATAL
