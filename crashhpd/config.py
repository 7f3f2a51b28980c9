# SPDX-License-Identifier: GPL-2.0-only
"""crashhpd's configuration: one TOML file, its drop-ins, validated as a whole.

Every key has a default and a missing default file is not an error, so the
daemon starts on a fresh host. Drop-ins are deep-merged per table, a later file
winning, so a packager or admin changes one thing without editing the main file.
Every problem is reported at once, naming the file that set the key and its
dotted name: a daemon that stops at the first typo is fixed one restart at a time.
"""

import difflib
import os
import tomllib
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from .abi.elf import MAX_PHNUM
from .abi.x86_64 import KERNEL_HALF
from .elfcorehdr.layout import LayoutName
from .elfcorehdr.pack import DEFAULT_MAX_MEMORY_RANGES
from .errors import ConfigError, quoted
from .safefile import describe, read_file

DEFAULT_PATH = "/etc/crashhpd/crashhpd.toml"
MAX_FILE_BYTES = 1 << 20  # a configuration file is a few KiB; a larger one is refused unread
MAX_TOTAL_BYTES = 1 << 20  # the main file and its drop-ins together: reading 40 drop-ins of 1 MiB took 34 s
MAX_DEPTH = 8  # tables and arrays inside one another; crashhpd's deepest key is two tables down
MAX_DELAY_MS = 600_000  # ten minutes: any debounce or client deadline beyond that is a typo, not a policy
MAX_KEXEC_TIMEOUT_S = 600.0  # kexec -p takes seconds; a load may not keep the daemon from stopping longer
DROPIN_SUFFIX = ".d"
ROOT_OPTION = "--root"  # names where `root` came from when the command line set it
DEFAULT_ORIGIN = "the default"
DEFAULT_STATE_DIR = "/var/lib/crashhpd"


KernelCpuSet = Literal["online", "present", "possible"]
Table = dict[str, Any]
KeyPath = tuple[str, ...]


def _absolute(value: str) -> str:
    """A daemon runs from `/`: a relative path would silently mean something else there."""
    if not os.path.isabs(value):
        raise ValueError("must be an absolute path")
    return value


def _group_name(value: str) -> str:
    """Rejects what cannot be a group name; whether the group exists is checked where it is used."""
    if not value or value.startswith("-") or any(c in value for c in ":/,\n\t "):
        raise ValueError("must be a group name")
    return value


def _program(value: str) -> str:
    """A bare name is looked up on PATH; a path must not depend on the daemon's working directory."""
    if not value or ("/" in value and not os.path.isabs(value)):
        raise ValueError("must be a program name or an absolute path")
    return value


def _kernel_address(value: int) -> int:
    """The x86_64 direct map lives in the kernel half, for 4- and 5-level paging alike."""
    if not KERNEL_HALF <= value < 2**64:
        raise ValueError(f"must be a kernel address, 0x{KERNEL_HALF:x} or above, below 2**64")
    return value


AbsPath = Annotated[str, AfterValidator(_absolute)]


class _Section(BaseModel):
    """Frozen so a loaded config cannot drift; strict because TOML already types every value."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        """TOML allows \\u0000 in a string; no path, name or command line handed to the system may hold one."""
        if isinstance(value, str) and "\0" in value:
            raise ValueError("must not contain a NUL character")
        return value


def _cross_field(keys: tuple[str, ...], message: str) -> PydanticCustomError:
    """An error about several keys together; `keys` (dotted, below the table) lets the report name each and its file."""
    return PydanticCustomError("cross_field", message.replace("{", "{{").replace("}", "}}"), {"keys": keys})


class MonitorConfig(_Section):
    """Where hotplug events come from; a storm must not overflow the socket."""

    source: Literal["auto", "udev", "kernel"] = "auto"
    # setsockopt() takes a C int; below 64 KiB a memory hot-add storm overflows the socket at once
    receive_buffer_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024, le=2**31 - 1)


class DebounceConfig(_Section):
    """Turns a burst of events into one update, without starving a storm that never pauses."""

    quiet_ms: int = Field(default=200, gt=0, le=MAX_DELAY_MS)
    max_delay_ms: int = Field(default=2000, gt=0, le=MAX_DELAY_MS)
    # where updates reload the crash kernel, each update a storm forces doubles the next max delay (up to 32x):
    # a 144 s hot-add costs 7 reloads, not 72; its end still waits only quiet_ms
    pace: bool = True

    @model_validator(mode="after")
    def _delay_covers_quiet(self) -> "DebounceConfig":
        if self.max_delay_ms < self.quiet_ms:
            raise _cross_field(("max_delay_ms", "quiet_ms"),
                               f"max_delay_ms ({self.max_delay_ms}) must be at least quiet_ms ({self.quiet_ms})")
        return self


class SandboxConfig(_Section):
    """The sandbox backend keeps its header in a file, sized like the kernel's reserved segment."""

    state_dir: AbsPath = DEFAULT_STATE_DIR  # the older spelling of the top-level state_dir; always equal to it
    max_cpus: int | None = Field(default=None, ge=1)
    # at least one CPU note, the VMCOREINFO note and the kernel image must fit beside the ranges
    max_memory_ranges: int = Field(default=DEFAULT_MAX_MEMORY_RANGES, ge=1, le=MAX_PHNUM - 3)

    @model_validator(mode="after")
    def _fits_elf(self) -> "SandboxConfig":
        if self.max_cpus is not None and 2 + self.max_cpus + self.max_memory_ranges > MAX_PHNUM:
            raise _cross_field(("max_cpus", "max_memory_ranges"),
                               f"2 + max_cpus ({self.max_cpus}) + max_memory_ranges ({self.max_memory_ranges}) "
                               f"program headers exceed the {MAX_PHNUM} ELF allows")
        return self


class ControlConfig(_Section):
    """The local socket crashhpctl talks to; a slow or greedy client must not stall the daemon."""

    socket: AbsPath = "/run/crashhpd/control.sock"
    group: Annotated[str, AfterValidator(_group_name)] = "root"
    timeout_ms: int = Field(default=2000, gt=0, le=MAX_DELAY_MS)
    max_request_bytes: int = Field(default=65536, gt=0, le=16 * 1024 * 1024)


class MetricsConfig(_Section):
    """Metrics as a node_exporter textfile, so no port is opened."""

    textfile_dir: AbsPath | None = None


class UdevConfig(_Section):
    """Whether, and with which files, crashhpd silences the distribution's per-event reload rule while it runs."""

    takeover: bool = True
    rules: AbsPath = "/usr/share/crashhpd/udev"  # the override files (udev/*.rules in the source tree)
    runtime_dir: AbsPath = "/run/udev/rules.d"  # under root: where udev looks before the packaged rules


class LogConfig(_Section):
    """How much goes to the journal."""

    level: Literal["debug", "info", "warning", "error"] = "info"


class KernelConfig(_Section):
    """The passive backend: the kernel keeps the header, crashhpd checks its work."""

    # When the kernel did not update its header after a burst (it read back stale), reload the crash kernel
    # once with kexec_file_load (`kexec -p -s`, a freshly sized segment), as [kexec] says; [kexec] dry_run holds.
    recover: bool = True


class KexecConfig(_Section):
    """How the kexec backend reloads the crash kernel when the kernel cannot update the header itself."""

    binary: Annotated[str, AfterValidator(_program)] | None = None
    kernel: AbsPath | None = None
    initrd: AbsPath | None = None
    cmdline: str | None = None
    append: str | None = None
    file_load: bool = False
    timeout_s: float = Field(default=60.0, gt=0, le=MAX_KEXEC_TIMEOUT_S)
    dry_run: bool = False
    hotplug: bool = False
    complete_cmdline: bool = True  # reload once a crash kernel loaded without what this host needs (acpi_no_memhotplug)


class Config(_Section):
    """Everything the daemon reads at start and on reload; `Config()` is the embedded default."""

    root: AbsPath = "/"
    backend: Literal["sandbox", "kexec", "kernel", "auto"] = "auto"  # protected from install: never the sandbox
    state_dir: AbsPath = DEFAULT_STATE_DIR  # every backend's files; [sandbox] state_dir is its older spelling
    layout: LayoutName | None = None
    cpus: KernelCpuSet = "online"
    page_offset: Annotated[int, AfterValidator(_kernel_address)] | None = None
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    debounce: DebounceConfig = Field(default_factory=DebounceConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    udev: UdevConfig = Field(default_factory=UdevConfig)
    kernel: KernelConfig = Field(default_factory=KernelConfig)
    kexec: KexecConfig = Field(default_factory=KexecConfig)
    _sources: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _one_state_dir(cls, data: Any, handler: ModelWrapValidatorHandler["Config"]) -> "Config":
        """`state_dir` and `[sandbox] state_dir` are one setting: the one set wins, two that differ are an error.

        Afterwards both hold the value in force, so whichever a reader (or a
        SIGHUP's comparison) looks at, it sees the same.
        """
        config = handler(data)
        top, older = config.state_dir, config.sandbox.state_dir
        top_set, older_set = "state_dir" in config.model_fields_set, "state_dir" in config.sandbox.model_fields_set
        if top_set and older_set and top != older:
            raise _cross_field(("state_dir", "sandbox.state_dir"),
                               f"state_dir ({top}) and sandbox.state_dir ({older}), its older spelling, differ; "
                               f"set only state_dir")
        if older_set and not top_set:
            return config.model_copy(update={"state_dir": older})
        if top_set and not older_set:
            return config.model_copy(update={"sandbox": config.sandbox.model_copy(update={"state_dir": top})})
        return config

    @property
    def sources(self) -> tuple[str, ...]:
        """The files read, in merge order, for the daemon's start-up log; empty means the defaults."""
        return self._sources


# --- merging: pure, keeps which file set each key ------------------------------------------


def merge(layers: Iterable[tuple[str, Table]]) -> tuple[Table, dict[KeyPath, str]]:
    """Deep-merges (source, table) pairs in order; returns the result and the source of every value."""
    merged: Table = {}
    origins: dict[KeyPath, str] = {}
    for source, table in layers:
        _overlay(merged, origins, table, source, ())
    return merged, origins


def _overlay(into: Table, origins: dict[KeyPath, str], table: Table, source: str, prefix: KeyPath) -> None:
    """Tables merge key by key; a value that replaces a table also drops who set what under it.

    Linear in the keys: only replacing a whole table looks through the origins.
    """
    for key, value in table.items():
        path = prefix + (key,)
        previous = into.get(key)
        if not (isinstance(value, dict) and isinstance(previous, dict)):
            if isinstance(previous, dict):
                for stale in [p for p in origins if p[: len(path)] == path]:
                    del origins[stale]
            origins.pop(path, None)
            into[key] = {} if isinstance(value, dict) else value
        if isinstance(value, dict):
            _overlay(into[key], origins, value, source, path)
        else:
            origins[path] = source


# --- error reports: pure ----------------------------------------------------------------------


def origin(origins: dict[KeyPath, str], path: KeyPath) -> str:
    """The file that set `path` (or the value holding it), the files that filled a table, else the default."""
    for end in range(len(path), 0, -1):
        if path[:end] in origins:
            return origins[path[:end]]
    inside = dict.fromkeys(source for key, source in origins.items() if key[: len(path)] == path)
    return ", ".join(inside) or DEFAULT_ORIGIN


def _suggestion(path: KeyPath) -> str:
    """An unknown key is usually a typo of a known one in the same table."""
    model: type[BaseModel] = Config
    for part in path[:-1]:
        field = model.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return ""
        model = field.annotation
    close = difflib.get_close_matches(path[-1], list(model.model_fields), n=1)
    return f" (did you mean {'.'.join(path[:-1] + (close[0],))}?)" if close else ""


def problem(error: ErrorDetails, origins: dict[KeyPath, str]) -> str:
    """One line for one validation error: `FILE: dotted.key: what is wrong`."""
    loc = tuple(str(part) for part in error["loc"])
    ctx = error.get("ctx") or {}
    if "keys" in ctx:
        return _cross_problem(loc, ctx["keys"], error["msg"], origins)
    return f"{origin(origins, loc)}: {'.'.join(loc)}: {_message(error, loc)}"


def _message(error: ErrorDetails, loc: KeyPath) -> str:
    """pydantic's wording, minus what only makes sense to a Python programmer, plus the value given."""
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key" + _suggestion(loc)
    if kind == "model_type":
        return f"must be a table (got {quoted(repr(error['input']))})"
    text = str(error["ctx"]["error"]) if kind == "value_error" else error["msg"]
    return f"{text} (got {quoted(repr(error['input']))})"


def _cross_problem(table: KeyPath, keys: tuple[str, ...], message: str, origins: dict[KeyPath, str]) -> str:
    """Leads with the first key a file set (the one an admin changed) and says where the others came from."""
    paths = [table + tuple(key.split(".")) for key in keys]
    lead = next((p for p in paths if origin(origins, p) != DEFAULT_ORIGIN), paths[0])
    where = origin(origins, lead)
    others = "".join(f" ({'.'.join(p)} from {origin(origins, p)})"
                     for p in paths if p != lead and origin(origins, p) != where)
    return f"{where}: {'.'.join(lead)}: {message}{others}"


def validate(layers: Iterable[tuple[str, Table]], root_override: str | None = None) -> Config:
    """Merges parsed files (and --root, which wins) and checks the result as a whole."""
    overrides = [] if root_override is None else [(ROOT_OPTION, {"root": root_override})]
    merged, origins = merge([*layers, *overrides])
    try:
        return Config.model_validate(merged)
    except ValidationError as err:
        raise ConfigError([problem(e, origins) for e in err.errors()]) from None


# --- files: the I/O edge ----------------------------------------------------------------------


def dropins(main: str) -> list[str]:
    """`MAIN.d/*.toml` in lexical order; hidden files and other suffixes (editor, dpkg leftovers) are skipped."""
    directory = main + DROPIN_SUFFIX
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as err:
        raise ConfigError([f"{directory}: {err.strerror}"]) from None
    return [os.path.join(directory, name) for name in sorted(names)
            if name.endswith(".toml") and not name.startswith(".")]


def read_toml(path: str, required: bool = True) -> Table | None:
    """One file's table, or None when an optional file is absent."""
    try:
        data = read_file(path, MAX_FILE_BYTES)
    except OSError as err:
        if isinstance(err, FileNotFoundError) and not required:
            return None
        raise ConfigError([describe(err, path)]) from None
    try:
        table = tomllib.loads(data.decode())
    except UnicodeDecodeError as err:
        raise ConfigError([f"{path}: not UTF-8 text (byte {err.start})"]) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([f"{path}: {err}"]) from None
    except RecursionError:
        raise ConfigError([f"{path}: arrays or tables nested too deeply"]) from None
    if _depth(table) > MAX_DEPTH:  # dotted keys (a.a.a...b = 1) nest tables that tomllib builds without recursing
        raise ConfigError([f"{path}: arrays or tables nested too deeply (more than {MAX_DEPTH} levels)"])
    return table


def _depth(value: object) -> int:
    """How deep tables and arrays nest, measured without recursion (the merge and validation recurse)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest


def read_layers(main: str, required: bool) -> tuple[list[tuple[str, Table]], list[str]]:
    """Every file that applies, parsed; a broken one is reported and the others still checked."""
    problems: list[str] = []
    try:
        files = [(main, required), *((path, True) for path in dropins(main))]
    except ConfigError as err:
        files, problems = [(main, required)], list(err.problems)
    layers: list[tuple[str, Table]] = []
    total = 0
    for path, needed in files:
        size = _size(path)
        total += size if size <= MAX_FILE_BYTES else 0  # a file too large alone is refused by its own name
        if total > MAX_TOTAL_BYTES:
            problems.append(f"{path}: the configuration files together exceed {MAX_TOTAL_BYTES} bytes; "
                            "crashhpd refuses to read further")
            break
        try:
            table = read_toml(path, needed)
        except ConfigError as err:
            problems.extend(err.problems)
            continue
        if table is not None:
            layers.append((path, table))
    return layers, problems


def _size(path: str) -> int:
    """A file's size before it is read (0 where it cannot be had: reading it then says why)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def load(path: str | None = None, root_override: str | None = None) -> Config:
    """The configuration in force: DEFAULT_PATH (may be absent) or `path` (must exist), plus drop-ins.

    Raises ConfigError listing every problem in every file.
    """
    main = DEFAULT_PATH if path is None else path
    layers, problems = read_layers(main, required=path is not None)
    try:
        config = validate(layers, root_override)
    except ConfigError as err:
        raise ConfigError(problems + err.problems) from None
    if problems:
        raise ConfigError(problems)
    config._sources = tuple(source for source, _ in layers)
    return config
