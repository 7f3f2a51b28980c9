# SPDX-License-Identifier: GPL-2.0-only
"""`crashhpd`: generate and inspect headers, and run the daemon.

Every error the outside world can cause ends as one line on stderr and an
exit status, never a traceback: 0 ok, 1 invalid header, 2 usage or I/O error.
"""

import argparse
import json
import os
import sys
from collections.abc import Sequence

from . import __version__
from .abi.x86_64 import KERNEL_HALF
from .elfcorehdr.build import build_valid
from .elfcorehdr.layout import preset
from .elfcorehdr.table import table
from .elfcorehdr.validate import NotAHeader, ParsedHeader, check, parse
from .errors import ConfigError, CrashhpdError, InvalidHeader
from .sysview.ranges import size_text, total_bytes
from .sysview.snapshot import read_snapshot

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
GUESSED_BASE = ("the direct-map base is unknown ({}): RAM p_vaddr assume 0x{:x}, wrong under KASLR; "
                "give --page-offset")


def kcore_reason(root: str) -> str:
    """Why /proc/kcore gave no direct-map base, as true for root as for anyone else."""
    path = os.path.join(root, "proc/kcore")
    if not os.path.exists(path):
        return f"no {path}: a kernel built without CONFIG_PROC_KCORE"
    if os.geteuid() != 0:
        return f"{path} cannot be read: run as root with CAP_SYS_RAWIO"
    return f"{path} cannot be read, even by root (lockdown=confidentiality, or no CAP_SYS_RAWIO)"


def _page_offset(text: str) -> int:
    """The x86_64 direct map sits in the kernel half of the address space."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not KERNEL_HALF <= value < 1 << 64:
        raise argparse.ArgumentTypeError(f"{text} is not a kernel address (0x{KERNEL_HALF:x} and above)")
    return value


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="crashhpd", description="Keeps the kdump elfcorehdr in step with hotplug.")
    ap.add_argument("--version", action="version", version=f"crashhpd {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="build the elfcorehdr for this system (or a tree under --root)")
    gen.add_argument("--root", default="/", help="root of the /proc and /sys to read (default /)")
    gen.add_argument("--layout", choices=["kernel", "kexec-tools"], default="kernel")
    gen.add_argument("--cpus", choices=["online", "present", "possible"], default=None,
                     help="CPU set of the kernel layout (default online)")
    gen.add_argument("--page-offset", type=_page_offset, default=None, help="direct-map base, overrides /proc/kcore")
    gen.add_argument("-o", "--output", metavar="FILE", help="write the header here (default: standard output)")

    ins = sub.add_parser("inspect", help="show a header's program headers and whether it is valid")
    ins.add_argument("file")
    ins.add_argument("--json", action="store_true", help="machine-readable output")
    ins.add_argument("--root", default=None, help="also check it against the system under this root")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", default=None,
                     help="config file (default /etc/crashhpd/crashhpd.toml and its .d/ drop-ins)")
    run.add_argument("--root", default=None, help="root of the /proc and /sys to read; overrides the config's root")

    release = sub.add_parser("release-udev", help="remove the udev overrides a daemon placed and could not remove "
                                                  "(the unit's ExecStopPost): the distribution's rule applies again")
    release.add_argument("--config", default=None, help="config file to take the root from (default "
                         "/etc/crashhpd/crashhpd.toml); one that does not parse means /")
    release.add_argument("--root", default=None, help="the root the daemon ran on (default: the config's, else /)")
    return ap


def release_udev(args: argparse.Namespace) -> int:
    """The unit's ExecStopPost: remove what the record names, whatever the configuration says now, valid or not
    (a daemon killed for a drop-in it refused must not leave the host with neither rule nor daemon)."""
    from . import config as config_mod
    from .service.udev_takeover import release_recorded

    root = args.root
    if root is None:
        try:
            root = config_mod.load(args.config).root
        except ConfigError as err:
            print(f"crashhpd: warning: {'; '.join(err.problems)}; releasing under /", file=sys.stderr)
            root = "/"
    release_recorded(root, "crashhpd is not running")
    return EXIT_OK


def generate(args: argparse.Namespace) -> int:
    try:
        built = build_valid(read_snapshot(args.root), preset(args.layout, args.cpus, args.page_offset))
    except InvalidHeader as err:
        print(f"crashhpd: {err}", file=sys.stderr)
        return EXIT_INVALID
    model, data = built.model, built.data
    if model.cpus_without_notes:
        print(f"crashhpd: warning: no crash_notes for CPU(s) {', '.join(map(str, model.cpus_without_notes))}; "
              "they get no note (is the kernel built with CONFIG_CRASH_DUMP?)", file=sys.stderr)
    if args.output:  # 0600: the header holds the KASLR'd kernel address and the RAM map
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as f:
            os.fchmod(fd, 0o600)  # a file that was there keeps no wider mode
            f.write(data)
    elif sys.stdout.isatty():
        print("crashhpd: refusing to write a binary header to a terminal; use -o FILE", file=sys.stderr)
        return EXIT_USAGE
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    if model.page_offset_guessed:  # after the write: a generate that failed has nothing to warn about
        print(f"crashhpd: warning: {GUESSED_BASE.format(kcore_reason(args.root), model.page_offset)}",
              file=sys.stderr)
    ram_bytes = total_bytes(model.ram)
    print(f"crashhpd: {len(data)} bytes, {model.phnum} program headers: {len(model.cpu_notes)} CPU notes, "
          f"{'a' if model.vmcoreinfo else 'no'} VMCOREINFO note, {'a' if model.image else 'no'} kernel image, "
          f"{len(model.ram)} RAM ranges ({size_text(ram_bytes)})", file=sys.stderr)
    return EXIT_OK


def inspect(args: argparse.Namespace) -> int:
    with open(args.file, "rb") as f:
        data = f.read()
    snapshot = read_snapshot(args.root) if args.root else None
    base_known = snapshot is None or snapshot.boot.direct_map_base is not None
    if not base_known:
        print("crashhpd: warning: the direct-map base is unknown (/proc/kcore cannot be read): the RAM p_vaddr "
              "of this header cannot be checked against the system's", file=sys.stderr)
    header: ParsedHeader | None
    try:
        header = parse(data)
        problems = check(header, snapshot)
    except NotAHeader as err:
        problems, header = [str(err)], None
    if args.json:
        print(json.dumps({"file": args.file, "valid": not problems, "problems": problems,
                          "header": header.to_json() if header else None,
                          "direct_map_base_known": base_known if snapshot is not None else None}, indent=2))
    else:
        if header is not None:
            print(table(header))
            ram = header.ram
            print(f"\n{len(header.segments)} program headers in {header.size} bytes: {len(header.notes)} notes, "
                  f"{len(ram)} RAM ranges ({size_text(sum(e - s + 1 for s, e in ram))})")
        print("valid" if not problems else "INVALID:\n" + "\n".join(f"  {p}" for p in problems))
    return EXIT_OK if not problems else EXIT_INVALID


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        from .wiring import run  # pulls in pyudev, journald and the config; only the daemon needs them

        return run(args.config, args.root)
    handlers = {"generate": generate, "inspect": inspect, "release-udev": release_udev}
    try:
        return handlers[args.command](args)
    except CrashhpdError as err:
        print(f"crashhpd: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `crashhpd inspect FILE | head`: the reader left; nothing to say to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_USAGE
    except OSError as err:
        print(f"crashhpd: {err.filename or ''}: {err.strerror}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
