# SPDX-License-Identifier: GPL-2.0-only
"""Backends: how a header reaches the kernel (or a file standing in for it).

`create` is the one place that maps the config's `backend` to a class, so
the daemon never imports a backend by name.
"""

from ..config import Config
from ..sysview.snapshot import Snapshot
from .base import Backend

DEFAULT_MAX_CPUS = 64  # NR_CPUS without MAXSMP, when kernel_max is not published


def max_cpus(config: Config, snapshot: Snapshot) -> int:
    """The segment must hold every CPU the kernel could ever bring up: NR_CPUS = kernel_max + 1."""
    if config.sandbox.max_cpus is not None:
        return config.sandbox.max_cpus
    return snapshot.kernel_max + 1 if snapshot.kernel_max is not None else DEFAULT_MAX_CPUS


def resolve_name(config: Config, snapshot: Snapshot) -> str:
    if config.backend != "auto":
        return config.backend
    from .kernel import choose

    return choose(snapshot.kernel)


def create(config: Config, snapshot: Snapshot) -> Backend:
    name = resolve_name(config, snapshot)
    if name == "sandbox":
        from .sandbox import SandboxBackend

        return SandboxBackend(config.state_dir, max_cpus(config, snapshot), config.sandbox.max_memory_ranges)
    if name == "kexec":
        from .kexec import KexecBackend

        return KexecBackend(config.kexec, config.root, config.state_dir, snapshot.kernel)
    from .kernel import KernelBackend

    recovery = None
    if config.kernel.recover:
        from .kexec import KexecBackend

        recovery = KexecBackend(config.kexec.model_copy(update={"file_load": True}), config.root, config.state_dir,
                                snapshot.kernel, defer_to_the_kernel=False)
    return KernelBackend(recovery)
