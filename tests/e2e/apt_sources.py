# SPDX-License-Identifier: GPL-2.0-only
"""The Debian mirrors this host's apt already uses, read from its own configuration.

The e2e parts are fetched from wherever the host fetches its own packages (a
local mirror, a snapshot, a proxy), never from an address written into this
project. Both formats apt reads are understood: one-line entries in
sources.list and *.list, and deb822 stanzas in *.sources; disabled stanzas,
deb-src entries and files apt ignores are skipped.
"""

import re
from dataclasses import dataclass
from pathlib import Path

ETC_APT = Path("/etc/apt")
_OPTIONS = re.compile(r"^\[([^\]]*)\]\s*")


@dataclass(frozen=True, slots=True)
class Entry:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Mirrors:
    archive: str  # serves the codename and its -updates and -backports suites
    security: str | None


def one_line_entries(text: str) -> list[Entry]:
    """`deb [options] URI SUITE COMPONENT...` lines (sources.list(5), one-line style)."""
    entries = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].strip()
        if not words.startswith("deb "):
            continue
        rest = _OPTIONS.sub("", words[4:].strip())
        parts = rest.split()
        if len(parts) >= 2:
            entries.append(Entry(parts[0].rstrip("/"), (parts[1],), tuple(parts[2:])))
    return entries


def deb822_entries(text: str) -> list[Entry]:
    """Stanzas of `Types:`, `URIs:`, `Suites:`, `Components:` (sources.list(5), deb822 style)."""
    entries = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            entries.append(Entry(uri.rstrip("/"), tuple(fields.get("suites", "").split()),
                                 tuple(fields.get("components", "").split())))
    return entries


def host_entries(etc: Path = ETC_APT) -> list[Entry]:
    entries = []
    main = etc / "sources.list"
    if main.is_file():
        entries += one_line_entries(main.read_text(errors="replace"))
    parts = etc / "sources.list.d"
    for path in sorted(parts.glob("*")) if parts.is_dir() else []:
        if path.suffix == ".list":
            entries += one_line_entries(path.read_text(errors="replace"))
        elif path.suffix == ".sources":
            entries += deb822_entries(path.read_text(errors="replace"))
    return entries


def mirrors(codename: str, etc: Path = ETC_APT) -> Mirrors | None:
    """The host's Debian archive (an entry serving `codename` or its -updates with `main`), and its security
    archive if it has one; None when apt has no Debian mirror configured at all."""
    archive = security = None
    for entry in host_entries(etc):
        if "main" not in entry.components:
            continue
        if archive is None and {codename, f"{codename}-updates"} & set(entry.suites):
            archive = entry.uri
        if security is None and f"{codename}-security" in entry.suites:
            security = entry.uri
    return None if archive is None else Mirrors(archive, security)
