# SPDX-License-Identifier: GPL-2.0-only
"""Write a command's man page from its argparse parser, so the page cannot drift from the options.

    python3 debian/manpage.py crashhpd|crashhpctl OUTPUT

Run by debian/rules with the package's own interpreter, which imports crashhpd
as installed. NAME, SYNOPSIS, OPTIONS and COMMANDS come from the parser;
DESCRIPTION from the parser and the command module's docstring; FILES from
the paths crashhpd's configuration defaults to.
"""

import argparse
import importlib
import os
import re
import sys
import time
from dataclasses import dataclass

from crashhpd import __version__
from crashhpd.config import DEFAULT_PATH, DEFAULT_STATE_DIR, DROPIN_SUFFIX, ControlConfig

SECTION = "8"
WIDE = 10_000  # usage on one line: roff fills and breaks it to the reader's width


@dataclass(frozen=True)
class Program:
    module: str
    files: tuple[tuple[str, str], ...]
    see_also: tuple[str, ...]


SOCKET = ControlConfig().socket
PROGRAMS = {
    "crashhpd": Program(
        "crashhpd.cli",
        (
            (DEFAULT_PATH, "The configuration (a conffile). Every key has a default, so the file may be absent."),
            (f"{DEFAULT_PATH}{DROPIN_SUFFIX}/*.toml",
             "Drop-ins, read after it in lexical order; a later file wins key by key."),
            (DEFAULT_STATE_DIR, "state_dir: the backends' headers and state, root's alone."),
            (SOCKET, "The control socket that crashhpctl(8) talks to."),
            ("/usr/share/crashhpd/udev/",
             "Comment-only udev rules that disable the distributions' reload of the crash kernel on every event."),
            ("/usr/share/doc/crashhpd/README.md.gz", "The full documentation."),
        ),
        ("crashhpctl(8)", "kexec(8)", "systemctl(1)"),
    ),
    "crashhpctl": Program(
        "crashhpd.control.client",
        (
            (SOCKET, "The daemon's control socket, unless --socket or the configuration names another."),
            (DEFAULT_PATH, "The configuration, read for its [control] socket."),
            ("/usr/share/doc/crashhpd/README.md.gz", "The full documentation, with the protocol and the metrics."),
        ),
        ("crashhpd(8)",),
    ),
}


def roff(text: str) -> str:
    """Plain text as roff: backslashes and minus signs escaped, `code` in bold, no line read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", text)
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.splitlines())


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


def page(name: str) -> str:
    program = PROGRAMS[name]
    module = importlib.import_module(program.module)
    parser: argparse.ArgumentParser = module._parser()
    commands = subcommands(parser)
    summary = (parser.description or "").rstrip(".")
    stamp = time.gmtime(int(os.environ.get("SOURCE_DATE_EPOCH", time.time())))
    out = [
        f'.TH {name.upper()} {SECTION} "{time.strftime("%Y-%m-%d", stamp)}" "crashhpd {__version__}" '
        '"System Administration"',
        ".SH NAME",
        f"{name} \\- {roff(summary[:1].lower() + summary[1:])}",
        ".SH SYNOPSIS",
    ]
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
    out.append(".SH FILES")
    for path, what in program.files:
        out += [".TP", f"\\fI{roff(path)}\\fR", roff(what)]
    out += [".SH SEE ALSO", ", ".join(f"\\fB{roff(ref.split('(')[0])}\\fR({ref.split('(')[1]}" for ref in
                                      program.see_also)]
    return "\n".join(out) + "\n"


def main() -> None:
    name, output = sys.argv[1:]
    with open(output, "w", encoding="utf-8") as f:
        f.write(page(name))


if __name__ == "__main__":
    main()
