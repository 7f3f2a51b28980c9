# SPDX-License-Identifier: GPL-2.0-only
"""/proc/iomem: text in, resource lines out; then the few views the header needs.

The kernel prints one resource per line, `START-END : NAME`, hex with an
inclusive end, indented two spaces per nesting level. Parsing is strict: a
line that does not have that shape is an error naming the line, because a
header built from half-understood memory would silently drop RAM from dumps.
"""

import re
from dataclasses import dataclass
from functools import lru_cache

from ..errors import ParseError, SnapshotError
from .ranges import Range

_LINE = re.compile(r"( *)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)")

U64_MAX = (1 << 64) - 1
RAM_PREFIX = "System RAM"
CRASH_KERNEL = "Crash kernel"


@dataclass(frozen=True, slots=True)
class Resource:
    start: int
    end: int
    name: str
    depth: int


def parse(text: str, path: str = "/proc/iomem") -> list[Resource]:
    """Every line of /proc/iomem as a Resource; refuses malformed lines and a non-root view."""
    resources: list[Resource] = []
    open_levels: list[Resource] = []  # the last resource seen at each depth on the current path
    for lineno, line in enumerate(text.split("\n"), 1):  # not splitlines(): \f or \x1c would shift line numbers
        if not line.strip():
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise ParseError(path, lineno, line, "not 'START-END : NAME'")
        indent, start_hex, end_hex, name = match.groups()
        if len(indent) % 2:
            raise ParseError(path, lineno, line, "odd indentation")
        depth = len(indent) // 2
        if depth > len(open_levels):
            raise ParseError(path, lineno, line, "nested deeper than its parent")
        start, end = int(start_hex, 16), int(end_hex, 16)
        if end > U64_MAX:
            raise ParseError(path, lineno, line, "address above 64 bits")
        if start > end:
            raise ParseError(path, lineno, line, "start above end")
        if not name.strip():
            raise ParseError(path, lineno, line, "empty name")
        parent = open_levels[depth - 1] if depth else None
        if parent is not None and not (parent.start <= start and end <= parent.end):
            raise ParseError(path, lineno, line, "outside its parent range")
        sibling = open_levels[depth] if depth < len(open_levels) else None
        if sibling is not None and start <= sibling.end and not _all_zero(sibling, start, end):
            raise ParseError(path, lineno, line, "overlaps or precedes the line before it")
        res = Resource(start, end, name, depth)
        del open_levels[depth:]
        open_levels.append(res)
        resources.append(res)
    if resources and all(r.start == 0 and r.end == 0 for r in resources):
        raise SnapshotError(
            f"{path}: every address reads 0; it was read without root (CAP_SYS_ADMIN), run as root"
        )
    return resources


def _all_zero(previous: Resource, start: int, end: int) -> bool:
    """A non-root reader sees every address as 0; such lines are refused as a whole below."""
    return previous.start == previous.end == start == end == 0


def system_ram(resources: list[Resource]) -> list[Range]:
    """Every `System RAM*` range at any depth, ascending; a RAM line inside a taken one adds nothing."""
    ram: list[Range] = []
    for res in resources:
        if not res.name.startswith(RAM_PREFIX):
            continue
        if ram and res.start <= ram[-1][1]:
            continue
        ram.append((res.start, res.end))
    return ram


def named(resources: list[Resource], name: str) -> list[Range]:
    """Every range with exactly this name, at any depth."""
    return [(r.start, r.end) for r in resources if r.name == name]


@dataclass(frozen=True, slots=True)
class IomemView:
    """What the header takes from /proc/iomem."""

    resources: tuple[Resource, ...]
    ram: tuple[Range, ...]
    crash_kernel: tuple[Range, ...]
    kernel_code: Range | None
    kernel_bss: Range | None


@lru_cache(maxsize=4)
def view_of(text: str, path: str = "/proc/iomem") -> IomemView:
    """parse() and the views, memoised on the text: most updates find /proc/iomem as the last one did, and its
    8192 lines cost more to parse than to compare. The same text gives the same (immutable) objects."""
    resources = parse(text, path)
    code, bss = named(resources, "Kernel code"), named(resources, "Kernel bss")
    return IomemView(tuple(resources), tuple(system_ram(resources)), tuple(named(resources, CRASH_KERNEL)),
                     code[0] if code else None, bss[0] if bss else None)
