# SPDX-License-Identifier: GPL-2.0-only
"""The Debian mirrors this host's apt already uses, read from its own configuration.

The e2e parts are fetched from wherever the host fetches its own packages (a
local mirror, a snapshot, a proxy), never from an address written into this
project. Both formats apt reads are understood: one-line entries in
sources.list and *.list, and deb822 stanzas in *.sources; disabled stanzas,
deb-src entries and files apt ignores are skipped. A guest of another release
than the host's (Debian 13 on a Debian 12 host) is fetched from the mirror the
host uses for its own release: a Debian mirror serves every suite of the archive.
"""

import re
from dataclasses import dataclass
from pathlib import Path

ETC_APT = Path("/etc/apt")
OS_RELEASE = Path("/etc/os-release")
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


def own_codename(os_release: Path = OS_RELEASE) -> str | None:
    """The host's own release (VERSION_CODENAME in os-release(5)), whose mirror serves the other releases."""
    try:
        text = os_release.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "VERSION_CODENAME":
            return value.strip().strip("\"'") or None
    return None


def mirrors(codename: str, etc: Path = ETC_APT, fallback: str | None = None) -> Mirrors | None:
    """The host's Debian archive (an entry serving `codename` or its -updates with `main`), and its security
    archive if it has one; when none serves `codename`, those serving `fallback` (the host's own release);
    None when apt has no Debian mirror configured at all."""
    archive = security = None
    for entry in host_entries(etc):
        if "main" not in entry.components:
            continue
        if archive is None and {codename, f"{codename}-updates"} & set(entry.suites):
            archive = entry.uri
        if security is None and f"{codename}-security" in entry.suites:
            security = entry.uri
    if archive is None and fallback is not None and fallback != codename:
        return mirrors(fallback, etc)
    return None if archive is None else Mirrors(archive, security)
