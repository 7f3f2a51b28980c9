# SPDX-License-Identifier: GPL-2.0-only
"""crashhpctl status's `crash memory` line: the reservation, the measured need, and SHORT when it is less."""

from crashhpd.control import contract
from crashhpd.control.render import show_status

MIB = 1 << 20


def line(**keys: object) -> str:
    status: dict[str, object] = {key: None for key in contract.StatusResult.__annotations__}
    status.update(version="0.1.0", pid=1, uptime_s=5.0, backend="kexec", backend_ok=True, backend_detail="ok",
                  layout="kexec-tools", generation=1, in_sync=True, last_changes=[], cpus=2, ram_ranges=3,
                  ram_bytes=0, header_bytes=0, events_received=0, events_coalesced=0, rescans=0, updates=1,
                  applies=0, skipped_noop=1, pending_events=0, errors={}, protected=True, unprotected_reasons=[],
                  **keys)
    text = show_status(status, 10.0)[0]  # type: ignore[arg-type]
    return next(row for row in text.splitlines() if row.startswith("crash memory"))


def test_enough_short_not_measured_and_unknown() -> None:
    assert line(crashkernel_reserved_bytes=256 * MIB, crashkernel_needed_bytes=128 * MIB) == \
        "crash memory   256 MiB reserved, 128 MiB needed"
    assert line(crashkernel_reserved_bytes=96 * MIB, crashkernel_needed_bytes=128 * MIB) == \
        "crash memory   96 MiB reserved, 128 MiB needed, SHORT by 32 MiB"
    assert line(crashkernel_reserved_bytes=96 * MIB).startswith(
        "crash memory   96 MiB reserved; the need was not measured for this host")
    assert line() == "crash memory   unknown: no Crash kernel range in /proc/iomem"
