# SPDX-License-Identifier: GPL-2.0-only
"""Errors that carry one clear line for the admin.

Every failure that comes from the outside world (a file, a config, a loader)
is one of these, so the CLI and the daemon can print `str(err)` and go on,
instead of a traceback.
"""


QUOTE_LIMIT = 200  # characters of an offending input an error quotes: enough to see it, never a 10 MB line


def quoted(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text` as it may appear in an error line: cut to `limit` characters, and said so."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class CrashhpdError(Exception):
    """Base of every error crashhpd reports as one line."""


class ParseError(CrashhpdError):
    """A kernel file had a line crashhpd cannot read; names file, line and text (at most QUOTE_LIMIT of it)."""

    def __init__(self, path: str, lineno: int, text: str, why: str) -> None:
        self.path = path
        self.lineno = lineno
        self.text = quoted(text)
        self.why = why
        super().__init__(f"{path}:{lineno}: {why}: {self.text!r}")


class SnapshotError(CrashhpdError):
    """The system view cannot be used at all (e.g. read without root)."""


class HeaderError(CrashhpdError):
    """A header cannot be built or does not fit where it must go."""


class InvalidHeader(HeaderError):
    """A header was built but breaks a rule the kdump kernel relies on; it is never applied."""


class BackendError(CrashhpdError):
    """A backend could not apply a header; what was applied before still stands.

    `retry_after` (seconds) asks the daemon to try again on its own timer: a
    busy kexec lock or a freed crash image is worth retrying, a header larger
    than the segment is not (None).
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class ConfigError(CrashhpdError):
    """The configuration is invalid; `problems` lists each one with file and key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))
