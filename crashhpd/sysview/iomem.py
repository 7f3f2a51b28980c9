# SPDX-License-Identifier: GPL-2.0-only
"""/proc/iomem: text in, resource lines out; then the few views the header needs.

The kernel prints one resource per line, `START-END : NAME`, hex with an
inclusive end, indented two spaces per nesting level. Parsing is strict: a
line that does not have that shape is an error naming the line, because a
header built from half-understood memory would silently drop RAM from dumps.
"""

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import attrgetter

from ..errors import ParseError, SnapshotError
from .ranges import Range
from .splice import common_ends

_LINE = re.compile(r"( *)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)")

U64_MAX = (1 << 64) - 1
RAM_PREFIX = "System RAM"
CRASH_KERNEL = "Crash kernel"
_MARKS = frozenset(("Kernel code", "Kernel bss", CRASH_KERNEL))  # the lines the header needs by name


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
        res = _resource(line, path, lineno)
        _place(res, open_levels, line, path, lineno)
        resources.append(res)
    if resources and all(r.start == 0 and r.end == 0 for r in resources):
        raise SnapshotError(
            f"{path}: every address reads 0; it was read without root (CAP_SYS_ADMIN), run as root"
        )
    return resources


def _resource(line: str, path: str, lineno: int) -> Resource:
    """One line on its own: its shape, numbers and name."""
    match = _LINE.fullmatch(line)
    if match is None:
        raise ParseError(path, lineno, line, "not 'START-END : NAME'")
    indent, start_hex, end_hex, name = match.groups()
    if len(indent) % 2:
        raise ParseError(path, lineno, line, "odd indentation")
    start, end = int(start_hex, 16), int(end_hex, 16)
    if end > U64_MAX:
        raise ParseError(path, lineno, line, "address above 64 bits")
    if start > end:
        raise ParseError(path, lineno, line, "start above end")
    if not name.strip():
        raise ParseError(path, lineno, line, "empty name")
    return Resource(start, end, name, len(indent) // 2)


def _place(res: Resource, open_levels: list[Resource], line: str, path: str, lineno: int) -> None:
    """A line against the lines before it: inside its parent, after its sibling; then it is the last of its depth."""
    depth = res.depth
    if depth > len(open_levels):
        raise ParseError(path, lineno, line, "nested deeper than its parent")
    parent = open_levels[depth - 1] if depth else None
    if parent is not None and not (parent.start <= res.start and res.end <= parent.end):
        raise ParseError(path, lineno, line, "outside its parent range")
    sibling = open_levels[depth] if depth < len(open_levels) else None
    if sibling is not None and res.start <= sibling.end and not _all_zero(sibling, res.start, res.end):
        raise ParseError(path, lineno, line, "overlaps or precedes the line before it")
    del open_levels[depth:]
    open_levels.append(res)


def reparse(old_text: str, old: tuple[Resource, ...], text: str, path: str = "/proc/iomem",
            dense: bool | None = None) -> tuple[tuple[Resource, ...], int, int, bool]:
    """parse(text), given `old`, the parse of `old_text`, and [first, stop): the whole top-level lines (with
    what nests in them) in which the two differ, every one outside them the same in both. Only the lines
    between the texts' common start and end are parsed, and the lines after them placed again until their
    context is the old one (a line at depth 0). Where that cannot be shown cheaply (blank lines, an error),
    the whole text is parsed. `dense`: whether each line of the old text is one of `old` (counted if None);
    the last value returned says the same of the new text."""
    try:
        return (*_reparse(old_text, old, text, path, _dense(old_text, old) if dense is None else dense), True)
    except (ParseError, _Whole):
        resources = tuple(parse(text, path))
        return resources, 0, len(resources), _dense(text, resources)


def _dense(text: str, resources: tuple[Resource, ...]) -> bool:
    """Each line of the text is one resource, in order (no blank lines): the lines can be counted instead."""
    return text.endswith("\n") and len(resources) == text.count("\n")


class _Whole(Exception):
    """The incremental parse cannot stand for parse(): parse the whole text."""


def _reparse(old_text: str, old: tuple[Resource, ...], text: str, path: str, dense: bool) \
        -> tuple[tuple[Resource, ...], int, int]:
    if not dense or not text.endswith("\n") or "\n\n" in text or text.startswith("\n"):
        raise _Whole
    prefix, suffix = common_ends(old_text, text)
    start = text.rfind("\n", 0, prefix) + 1  # the first line that is not whole in the common start
    tail = len(text) - suffix
    if tail > start and text[tail - 1] != "\n":  # the first line whole in the common end
        tail = text.find("\n", tail) + 1
    # lines before the window (the old parse's first `head` resources) and after it (its last `kept`): the old
    # text's lines are its resources one for one, so counting the shorter side and the old window gives both
    old_middle = old_text.count("\n", start, len(old_text) - (len(text) - tail))
    if start <= len(text) - tail:
        head = text.count("\n", 0, start)
        kept = len(old) - head - old_middle
    else:
        kept = text.count("\n", tail)
        head = len(old) - kept - old_middle
    if head < 0 or kept < 0:
        raise _Whole
    open_levels, first = _open_levels(old, head)
    middle = []
    for lineno, line in enumerate(text[start:tail].split("\n")[:-1], head + 1):
        if not line.strip():
            raise _Whole
        res = _resource(line, path, lineno)
        _place(res, open_levels, line, path, lineno)
        middle.append(res)
    after = old[len(old) - kept:]
    stop = head + len(middle) + len(after)
    for i, res in enumerate(after):  # their context is the window's until a line at depth 0
        _place(res, open_levels, "", path, head + len(middle) + i + 1)
        if res.depth == 0:
            stop = head + len(middle) + i
            break
    resources = old[:head] + tuple(middle) + after
    if not any(r.start or r.end for r in resources):
        raise _Whole
    return resources, first, stop


def _open_levels(resources: tuple[Resource, ...], count: int) -> tuple[list[Resource], int]:
    """parse()'s open_levels after the first `count` resources (the last one, its parent, and so on up), and
    the index of the top-level one among them (0 when there is none)."""
    levels: list[Resource] = []
    top = 0
    for at in range(count - 1, -1, -1):
        res = resources[at]
        if not levels or res.depth < levels[-1].depth:
            levels.append(res)
            if res.depth == 0:
                top = at
                break
    return levels[::-1], top


def _all_zero(previous: Resource, start: int, end: int) -> bool:
    """A non-root reader sees every address as 0; such lines are refused as a whole below."""
    return previous.start == previous.end == start == end == 0


def system_ram(resources: Iterable[Resource]) -> list[Range]:
    """Every `System RAM*` range at any depth, ascending; a RAM line inside a taken one adds nothing."""
    ram: list[Range] = []
    for res in resources:
        if not res.name.startswith(RAM_PREFIX):
            continue
        if ram and res.start <= ram[-1][1]:
            continue
        ram.append((res.start, res.end))
    return ram


def named(resources: Iterable[Resource], name: str) -> list[Range]:
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
    text: str = field(default="", repr=False, compare=False)  # what it was parsed from
    marks: tuple[Resource, ...] = field(default=(), repr=False, compare=False)  # every line named in _MARKS
    dense: bool = field(default=False, repr=False, compare=False)  # each line of `text` is one resource


_LAST: dict[str, IomemView] = {}  # the last view of each path: most updates find it, or a few lines changed
_PATHS = 8  # paths remembered (one per root: tests use many)


def view_of(text: str, path: str = "/proc/iomem") -> IomemView:
    """parse() and the views, memoised: most updates find /proc/iomem as the last one did, and its 8192 lines
    cost more to parse than to compare; a hotplug changes a few lines, and only they are parsed again."""
    last = _LAST.pop(path, None)
    if last is not None and last.text == text:
        view = last
    elif last is None:
        resources = tuple(parse(text, path))
        view = _view(resources, tuple(system_ram(resources)), tuple(r for r in resources if r.name in _MARKS), text,
                     _dense(text, resources))
    else:
        view = _view_again(last, text, path)
    _LAST[path] = view
    while len(_LAST) > _PATHS:
        del _LAST[next(iter(_LAST))]
    return view


def _view(resources: tuple[Resource, ...], ram: tuple[Range, ...], marks: tuple[Resource, ...], text: str,
          dense: bool) -> IomemView:
    code, bss = named(marks, "Kernel code"), named(marks, "Kernel bss")
    return IomemView(resources, ram, tuple(named(marks, CRASH_KERNEL)), code[0] if code else None,
                     bss[0] if bss else None, text, marks, dense)


def _view_again(last: IomemView, text: str, path: str) -> IomemView:
    """The views of a text that differs from the last one in some top-level lines: each taken from the last
    view outside them (top-level lines ascend, so what nests in them sorts by address), found again inside."""
    resources, first, stop, dense = reparse(last.text, last.resources, text, path, last.dense)
    low = resources[first].start if 0 < first < len(resources) else -1
    high = resources[stop].start if stop < len(resources) else U64_MAX + 1
    changed = resources[first:stop]
    start = attrgetter("start")
    marks = (last.marks[:bisect.bisect_left(last.marks, low, key=start)]
             + tuple(r for r in changed if r.name in _MARKS)
             + last.marks[bisect.bisect_left(last.marks, high, key=start):])
    ram = (last.ram[:bisect.bisect_left(last.ram, (low,))] + tuple(system_ram(changed))
           + last.ram[bisect.bisect_left(last.ram, (high,)):])
    return _view(resources, ram, marks, text, dense)
