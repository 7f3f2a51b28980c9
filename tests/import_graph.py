# SPDX-License-Identifier: GPL-2.0-only
"""The package's own import graph, read from the source with `ast`: levels, cycles and modules per folder.

    python3 tests/import_graph.py [PACKAGE_DIR]     # default: the crashhpd/ beside tests/
    python3 tests/import_graph.py --closure crashhpd.control.client [PACKAGE_DIR]

`--closure MODULE` lists what importing MODULE imports, transitively: the package's modules (the
packages above each included, as Python imports them first), and the top-level modules from outside
it, the standard library's apart from third-party ones (whose own imports are not followed).

Every `import crashhpd...` and `from . import ...` counts, wherever it stands (a function-level import
still ties the two modules together). A module's level is 0 when it imports nothing of the package,
else one more than the highest level it imports; the modules of a cycle count as one node, and the cycle is listed.
"""

import argparse
import ast
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path


def module_name(package_dir: Path, path: Path) -> str:
    parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package_dir: Path) -> dict[str, Path]:
    return {module_name(package_dir, path): path for path in sorted(package_dir.rglob("*.py"))}


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The package's modules `name` imports: `from x import y` counts y when y is a module, else x."""
    known = set(known)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, is_package, node)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def external_imports(path: Path, package: str) -> set[str]:
    """The top-level names of the modules from outside `package` that the file imports (relative ones are inside)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found - {package}


def closure(package_dir: Path, module: str) -> tuple[set[str], set[str], set[str]]:
    """What importing `module` imports: (the package's modules, standard library modules, third-party modules)."""
    mods = modules(package_dir)
    edges = graph(package_dir)
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for above in (".".join(parts[:n]) for n in range(1, len(parts) + 1)):  # a module's packages come first
            if above not in seen:
                seen.add(above)
                todo.extend(edges[above])
    outside = set().union(*(external_imports(mods[m], package_dir.name) for m in seen))
    stdlib = {m for m in outside if m in sys.stdlib_module_names or m == "__future__"}
    return seen, stdlib, outside - stdlib


def closure_report(package_dir: Path, module: str) -> str:
    own, stdlib, third_party = closure(package_dir, module)
    return "\n".join([
        f"{module}: {len(own)} modules of the package, {len(stdlib)} of the standard library, "
        f"{len(third_party)} third-party",
        f"  package: {' '.join(sorted(own))}",
        f"  standard library: {' '.join(sorted(stdlib))}",
        f"  third-party: {' '.join(sorted(third_party)) or '(none)'}",
    ])


def graph(package_dir: Path) -> dict[str, set[str]]:
    mods = modules(package_dir)
    return {name: imports_of(name, path, mods) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def levels(edges: dict[str, set[str]]) -> dict[str, int]:
    """Longest import chain below each module; the modules of a cycle share one level, as one node."""
    component = {m: m for m in edges}
    for c in cycles(edges):
        for m in c:
            component[m] = c[0]
    below: dict[str, set[str]] = {}
    for m, deps in edges.items():
        below.setdefault(component[m], set()).update(component[d] for d in deps if component[d] != component[m])
    level: dict[str, int] = {}

    def of(c: str) -> int:
        if c not in level:
            level[c] = 1 + max((of(d) for d in below[c]), default=-1)
        return level[c]

    return {m: of(component[m]) for m in edges}


def folder(package_dir: Path, path: Path) -> str:
    return "/".join((package_dir.name, *path.relative_to(package_dir).parent.parts))


def report(package_dir: Path) -> str:
    edges = graph(package_dir)
    lv = levels(edges)
    loops = cycles(edges)
    per_folder = Counter(folder(package_dir, path) for path in modules(package_dir).values()
                         if path.name != "__init__.py")
    lines = [f"{len(edges)} modules, {max(lv.values(), default=0) + 1} import levels, {len(loops)} cycles"]
    lines += [f"  cycle: {' <-> '.join(c)}" for c in loops]
    lines.append("modules per folder (without __init__.py):")
    lines += [f"  {name:<24} {count}" for name, count in sorted(per_folder.items())]
    lines.append("levels:")
    for n in range(max(lv.values(), default=-1) + 1):
        lines.append(f"  {n:>2}: {' '.join(sorted(m for m, v in lv.items() if v == n))}")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="The package's import graph, or one module's import closure.")
    ap.add_argument("package_dir", nargs="?", type=Path, default=Path(__file__).resolve().parent.parent / "crashhpd")
    ap.add_argument("--closure", metavar="MODULE", help="what importing MODULE imports, third-party modules included")
    args = ap.parse_args()
    print(closure_report(args.package_dir, args.closure) if args.closure else report(args.package_dir))
