# SPDX-License-Identifier: GPL-2.0-only
"""/proc/kallsyms, the one reader: where the kernel's own symbols asked for are, in one bounded pass.

The file lists every symbol of the kernel and of its modules, megabytes of
them; it is read in chunks, searched for the few names asked, never held
whole, and refused past a size no kernel reaches. kptr_restrict shows every
address as zeros: such a symbol is listed but hidden, and reads None.
"""

import os
import re
from collections.abc import Iterable

from ..errors import SnapshotError
from .files import open_regular, snapshot_error, under

KALLSYMS = "proc/kallsyms"
# 5.4 MB for this 6.18 kernel's 121k symbols; 10-20 MB on big distribution kernels with CONFIG_KALLSYMS_ALL
# and their modules loaded. 64 MiB is three times that, and a pass over it still takes well under a second.
MAX_BYTES = 64 << 20
# a line is 16 hex digits, the type, a name of at most KSYM_NAME_LEN (512) and a module's name in brackets
MAX_LINE = 4096
CHUNK = 1 << 20
_ADDRESS_AND_TYPE = re.compile(r"([0-9a-fA-F]{1,16}) [A-Za-z]")  # a line before ` NAME`


def find_symbols(text: str, names: Iterable[str]) -> dict[str, int]:
    """The addresses whole lines of `text` give the kernel's own symbols `names` (0: hidden); absent ones left out.

    A module's symbol of the same name (`ADDR t NAME\t[module]`) does not count. A plain search for
    the line's end, then a check of its start: a regex over kallsyms' megabytes costs 30 ms a name.
    """
    if not text.endswith("\n"):
        text += "\n"
    found = {}
    for name in names:
        needle = f" {name}\n"
        at = text.find(needle)
        while at >= 0:
            match = _ADDRESS_AND_TYPE.fullmatch(text, text.rfind("\n", 0, at) + 1, at)
            if match:
                found[name] = int(match.group(1), 16)
                break
            at = text.find(needle, at + 1)
    return found


def read_symbols(root: str, names: tuple[str, ...], limit: int = MAX_BYTES) -> dict[str, int | None] | None:
    """The kernel's own symbols `names` under `root`: an address, or None where kptr_restrict hides it.

    A name kallsyms does not list is left out; no kallsyms at all is None. The first line that
    names a symbol counts, as in find_symbols(), and the pass stops once every name is found.
    SnapshotError when the file cannot be read, is larger than `limit` bytes or is not line-shaped.
    """
    path = under(root, KALLSYMS)
    try:
        fd = open_regular(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise snapshot_error(path, err) from None
    found: dict[str, int] = {}
    carry = b""
    total = 0
    try:
        while names:
            chunk = os.read(fd, min(CHUNK, limit + 1 - total))
            total += len(chunk)
            if total > limit:
                raise SnapshotError(f"{path}: more than {limit} bytes, larger than any kallsyms")
            data = carry + chunk
            whole = data.rfind(b"\n") + 1 if chunk else len(data)  # at the end, the last line without its newline
            found.update(find_symbols(data[:whole].decode(errors="replace"), [n for n in names if n not in found]))
            carry = data[whole:]
            if not chunk or all(name in found for name in names):
                break
            if len(carry) > MAX_LINE:
                raise SnapshotError(f"{path}: a line of more than {MAX_LINE} bytes at byte {total - len(carry)}, "
                                    f"longer than any kallsyms line")
    except OSError as err:
        raise snapshot_error(path, err) from None
    finally:
        os.close(fd)
    return {name: address or None for name, address in found.items()}
