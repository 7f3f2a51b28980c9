# SPDX-License-Identifier: GPL-2.0-only
"""Write crashhpd's man pages from the code they describe, so no page can drift from it.

    python3 debian/manpage.py crashhpd|crashhpctl|crashhpd.toml OUTPUT

Run by debian/rules with the package's own interpreter, which imports crashhpd
as installed. For the commands, NAME, SYNOPSIS, OPTIONS and COMMANDS come from
the argparse parser, DESCRIPTION from the parser and the command module's
docstring, EXIT STATUS from the modules' exit-status constants, FILES from the
paths crashhpd's configuration defaults to. crashhpd.toml(5) lists every key of
the configuration's model with its type, limits and default, explained by the
comments of the shipped etc/crashhpd.toml (a test keeps those complete).
"""

import argparse
import importlib
import os
import re
import sys
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import annotated_types
from pydantic import AfterValidator, BaseModel

from crashhpd import __version__, cli, config, wiring
from crashhpd.config import DEFAULT_PATH, DEFAULT_STATE_DIR, DROPIN_SUFFIX, Config, ControlConfig
from crashhpd.control import contract

WIDE = 10_000  # usage on one line: roff fills and breaks it to the reader's width
SHIPPED = Path(__file__).resolve().parent.parent / "etc" / "crashhpd.toml"
INTERRUPTED = 130  # 128 + SIGINT: what `crashhpd generate` and `inspect` return on Ctrl-C
SOCKET = ControlConfig().socket
DOCS = "/usr/share/doc/crashhpd/"

ExitStatus = tuple[tuple[str, tuple[tuple[int, str], ...]], ...]  # (the commands it is for, or "", (code, meaning))


@dataclass(frozen=True)
class Program:
    module: str
    files: tuple[tuple[str, str], ...]
    see_also: tuple[str, ...]
    exit_status: ExitStatus


PROGRAMS = {
    "crashhpd": Program(
        "crashhpd.cli",
        (
            (DEFAULT_PATH, "The configuration (a conffile), described in crashhpd.toml(5). Every key has a default, "
                           "so the file may be absent."),
            (f"{DEFAULT_PATH}{DROPIN_SUFFIX}/*.toml",
             "Drop-ins, read after it in lexical order; a later file wins key by key."),
            (DEFAULT_STATE_DIR, "state_dir: the backends' headers and state, root's alone."),
            (SOCKET, "The control socket that crashhpctl(8) talks to."),
            ("/usr/share/crashhpd/udev/",
             "Comment-only udev rules that disable the distributions' reload of the crash kernel on every event."),
            (f"{DOCS}README.md.gz", "The user's guide: which backend for which kernel, configuring, monitoring, "
                                    "troubleshooting."),
            (f"{DOCS}docs/", "The design, the proofs on real kernels, the benchmarks and the test harness."),
        ),
        ("crashhpctl(8)", "crashhpd.toml(5)", "kexec(8)", "systemctl(1)"),
        (
            ("run", (
                (cli.EXIT_OK, "The daemon stopped cleanly, on SIGTERM or SIGINT."),
                (wiring.EX_FATAL, "It could not start; the journal's \"cannot start:\" line says why."),
                (cli.EXIT_USAGE, "Usage: the command line is wrong."),
                (wiring.EX_UNAVAILABLE, "Another process (most likely another crashhpd) answers on the control "
                                        "socket."),
                (wiring.EX_CONFIG, "EX_CONFIG: the configuration is invalid (every problem is listed with its file "
                                   "and key), or the control socket cannot be set up as configured (a [control] "
                                   "group that does not exist, a path that is not a socket). The unit's "
                                   "RestartPreventExitStatus: restarting cannot fix it."),
            )),
            ("generate, inspect", (
                (cli.EXIT_OK, "The header is valid (generate: built, validated and written)."),
                (cli.EXIT_INVALID, "The header is invalid; every problem is printed."),
                (cli.EXIT_USAGE, "Usage or I/O error: one line names the file and what is wrong."),
                (INTERRUPTED, "Interrupted (SIGINT)."),
            )),
            ("release-udev", (
                (cli.EXIT_OK, "The overrides the record names are removed (a configuration that does not parse "
                              "means the root /)."),
                (cli.EXIT_USAGE, "Usage: the command line is wrong."),
            )),
        ),
    ),
    "crashhpctl": Program(
        "crashhpd.control.client",
        (
            (SOCKET, "The daemon's control socket, unless --socket or the configuration names another."),
            (DEFAULT_PATH, "The configuration, read for its [control] socket (crashhpd.toml(5))."),
            (f"{DOCS}README.md.gz", "The user's guide: the status verdict, the metrics, the alerts."),
            (f"{DOCS}docs/design.md.gz", "The control protocol, for scripts that talk to the socket themselves."),
        ),
        ("crashhpd(8)", "crashhpd.toml(5)"),
        (
            ("", (
                (contract.EXIT_OK, "OK; for status: protected, a dump taken now would save every byte of RAM and "
                                   "every CPU."),
                (contract.EXIT_FAILED, "The daemon answered with an error; status: NOT protected (the first line "
                                       "says why); verify: the header in force differs from a fresh snapshot."),
                (contract.EXIT_USAGE, "Usage: the command line is wrong."),
                (contract.EXIT_UNREACHABLE, "The daemon cannot be reached: not running, this user may not "
                                            "connect, or no reply in time. With --json an object with code "
                                            "\"unreachable\", message and hint is printed on standard output."),
            )),
        ),
    ),
}


def roff(text: str) -> str:
    """Plain text as roff: backslashes and minus signs escaped, `code` in bold, no line read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", text)
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.splitlines())


def header(name: str, section: str, title: str, summary: str) -> list[str]:
    stamp = time.gmtime(int(os.environ.get("SOURCE_DATE_EPOCH", time.time())))
    return [f'.TH {name.upper()} {section} "{time.strftime("%Y-%m-%d", stamp)}" "crashhpd {__version__}" "{title}"',
            ".SH NAME", f"{roff(name)} \\- {roff(summary)}"]


def files_and_see_also(files: tuple[tuple[str, str], ...], see_also: tuple[str, ...]) -> list[str]:
    out = [".SH FILES"]
    for path, what in files:
        out += [".TP", f"\\fI{roff(path)}\\fR", roff(what)]
    refs = (f"\\fB{roff(ref.split('(')[0])}\\fR({ref.split('(')[1]}" for ref in see_also)
    return out + [".SH SEE ALSO", ", ".join(refs)]


# --- crashhpd(8), crashhpctl(8): from the argparse parsers ---------------------------------------------


def usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=WIDE)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    return formatter.format_help().strip()


def options(parser: argparse.ArgumentParser) -> list[str]:
    """One .TP entry per option and positional argument; subcommands are listed apart."""
    formatter = argparse.HelpFormatter(parser.prog, width=WIDE)
    lines = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        lines += [".TP", f"\\fB{roff(formatter._format_action_invocation(action))}\\fR"]
        if action.help:
            lines.append(roff(formatter._expand_help(action)))
        elif action.default not in (None, argparse.SUPPRESS):
            lines.append(f"default {roff(str(action.default))}")
    return lines


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                found.append((choice.dest, choice.help or "", action.choices[choice.dest]))
    return found


def exit_status(groups: ExitStatus) -> list[str]:
    out = [".SH EXIT STATUS"]
    for commands, codes in groups:
        if commands:
            out.append(".SS " + roff(commands))
        for code, meaning in codes:
            out += [".TP", f"\\fB{code}\\fR", roff(meaning)]
    return out


def command_page(name: str) -> str:
    program = PROGRAMS[name]
    module = importlib.import_module(program.module)
    parser: argparse.ArgumentParser = module._parser()
    commands = subcommands(parser)
    summary = (parser.description or "").rstrip(".")
    out = header(name, "8", "System Administration", summary[:1].lower() + summary[1:]) + [".SH SYNOPSIS"]
    for line in [usage(parser)] + [usage(sub) for _, _, sub in commands]:
        out += [".HP", roff(line)]
    out += [".SH DESCRIPTION", roff(parser.description or "")]
    for paragraph in (module.__doc__ or "").split("\n\n")[1:]:
        out += [".PP", roff(" ".join(paragraph.split()))]
    out += [".SH OPTIONS"] + options(parser)
    if commands:
        out.append(".SH COMMANDS")
        for command, help_text, sub in commands:
            out += [".SS " + roff(command), roff(help_text[:1].upper() + help_text[1:]) + "."]
            out += options(sub)
    out += exit_status(program.exit_status)
    out += files_and_see_also(program.files, program.see_also)
    return "\n".join(out) + "\n"


# --- crashhpd.toml(5): from the configuration's model ----------------------------------------------------

VALIDATORS: dict[Callable[..., object], str] = {  # what each of config.py's value checks accepts, in words
    config._absolute: "an absolute path",
    config._group_name: "a group name",
    config._program: "a program name, found on PATH, or an absolute path",
    config._kernel_address: f"a kernel address, 0x{config.KERNEL_HALF:x} or above",
}
BOUNDS = ((annotated_types.Ge, "ge", "at least"), (annotated_types.Gt, "gt", "more than"),
          (annotated_types.Le, "le", "at most"), (annotated_types.Lt, "lt", "less than"))
SCALARS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
SETTING = re.compile(r"#([a-z_]+) = (.*)")  # `#key = value` in the shipped file: a setting, not prose


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def value_type(annotation: object, metadata: list[object]) -> str:
    """What a key accepts, in words, from its annotation and constraints; an unknown check fails the build."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [value_type(arg, metadata) for arg in typing.get_args(annotation) if arg is not type(None)]
        return " or ".join(kinds)
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        return value_type(base, [*metadata, *extra])
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(toml_value(arg) for arg in typing.get_args(annotation))
    words = [SCALARS[annotation]] if annotation in SCALARS else []  # KeyError: a type this page cannot name yet
    for item in metadata:
        if isinstance(item, AfterValidator):
            words = [VALIDATORS[item.func]]
        else:
            _, attr, text = next(b for b in BOUNDS if isinstance(item, b[0]))
            words.append(f"{text} {getattr(item, attr)}")
    return ", ".join(words)


def shipped_comments(text: str) -> dict[tuple[str, ...], tuple[list[str], str]]:
    """(table, key) -> the comment lines right above `#key = value` in the shipped file, and that value."""
    found: dict[tuple[str, ...], tuple[list[str], str]] = {}
    table: tuple[str, ...] = ()
    block: list[str] = []
    for line in text.splitlines():
        if match := re.fullmatch(r"\[([a-z_]+)\]", line):
            table, block = (match[1],), []
        elif match := SETTING.fullmatch(line):
            found[table + (match[1],)] = (block, match[2])
            block = []
        elif line.startswith("#"):
            block.append(line[2:] if line.startswith("# ") else line[1:])
        else:
            block = []  # a blank line ends a comment block
    return found


def key_entries(model: type[BaseModel], table: tuple[str, ...],
                comments: dict[tuple[str, ...], tuple[list[str], str]]) -> list[str]:
    out = []
    for key, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            continue
        if table + (key,) not in comments:
            raise SystemExit(f"manpage.py: {SHIPPED} does not explain {'.'.join(table + (key,))}")
        lines, shown = comments[table + (key,)]
        default = "unset by default" if field.default is None else f"default {toml_value(field.default)}"
        out += [".TP", f"\\fB{roff(key)}\\fR ({roff(value_type(field.annotation, field.metadata))}; {roff(default)})"]
        out += [roff(line) if line else ".sp" for line in lines]
        if field.default is None:  # the shipped file shows an example value instead of the default
            out.append(roff(f"    {key} = {shown}"))
    return out


def config_page() -> str:
    comments = shipped_comments(SHIPPED.read_text(encoding="utf-8"))
    intro, *reasons = (config.__doc__ or "").split("\n\n")
    out = header("crashhpd.toml", "5", "File Formats", "configuration of crashhpd(8) and crashhpctl(8)")
    out += [".SH SYNOPSIS", f"\\fI{roff(DEFAULT_PATH)}\\fR", ".br",
            f"\\fI{roff(DEFAULT_PATH + DROPIN_SUFFIX)}/*.toml\\fR"]
    out += [".SH DESCRIPTION", roff(intro.strip())]
    out += [".PP", roff(
        f"crashhpd reads {DEFAULT_PATH}, which may be absent, then every file in {DEFAULT_PATH}{DROPIN_SUFFIX}/ "
        "whose name ends in .toml and does not start with a dot, in lexical order. Tables are merged key by key "
        "and a later file wins, so a drop-in holds only the keys it changes. `crashhpd run --config FILE` reads "
        f"FILE, which must exist, and FILE{DROPIN_SUFFIX}/ instead; crashhpctl(8) reads the same files for "
        "[control] socket. With no file at all, every key has its default.")]
    for paragraph in reasons:
        out += [".PP", roff(" ".join(paragraph.split()))]
    out += [".PP", roff(
        f"Unknown keys are refused, and so are a NUL in a string, a file over {config.MAX_FILE_BYTES} bytes, "
        f"files over {config.MAX_TOTAL_BYTES} bytes together, tables or arrays nested more than {config.MAX_DEPTH} "
        f"deep, and any time in milliseconds over {config.MAX_DELAY_MS}. An invalid configuration stops "
        f"`crashhpd run` with exit status {wiring.EX_CONFIG}, listing every problem with the file and key that "
        "caused it; on SIGHUP (`systemctl reload crashhpd`) it is reported and the running configuration kept.")]
    out += [".SH KEYS", ".SS Top level"] + key_entries(Config, (), comments)
    for key, field in Config.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            out += [f".SS [{key}]", roff(" ".join((model.__doc__ or "").split()))]
            out += key_entries(model, (key,), comments)
    example = (f"# {DEFAULT_PATH}{DROPIN_SUFFIX}/50-local.toml\n"
               "# crashhpctl for the adm group; a kdump kernel that leaves hot-added DIMMs alone\n"
               '[control]\ngroup = "adm"\n[kexec]\nappend = "acpi_no_memhotplug"')
    out += [".SH EXAMPLE", ".nf", roff(example), ".fi"]
    files = ((DEFAULT_PATH, "The configuration, shipped with every key commented out at its default."),
             (f"{DEFAULT_PATH}{DROPIN_SUFFIX}/", "Drop-ins, read after it."))
    out += files_and_see_also(files, ("crashhpd(8)", "crashhpctl(8)"))
    return "\n".join(out) + "\n"


def page(name: str) -> str:
    return config_page() if name == "crashhpd.toml" else command_page(name)


def main() -> None:
    name, output = sys.argv[1:]
    with open(output, "w", encoding="utf-8") as f:
        f.write(page(name))


if __name__ == "__main__":
    main()
