"""The package structure of `trackstream/`, measured from the code's imports: files and lines per package,
the package-to-package import table, arrows that run up the floors, pairs of packages that import each
other, and imports of another module's private names.

    python lab/structure.py [--repo DIR] [--json OUT] [--trip MODULE:FUNCTION:PARAM] [--before DIR]

``--trip`` (default: the DMD stage's config, ``trackstream.train.dmd.build:build_dmd:cfg``) follows one
parameter through every call that hands it, or a part of it, to another function of the package, and
counts the files it enters and its climbs back up the floors (``trip``).

Floors are the checkout's own ``layers.json`` ({package: floor}); a checkout without one is measured by the
table it had before that file (``FLOORS``). A package the table does not know is listed with floor "?".
"""

from __future__ import annotations

import argparse
import ast
import json
from collections import Counter, defaultdict
from pathlib import Path

from trackstream.eval.tables import markdown_table

# the floors of checkouts that predate layers.json (to measure them as "before")
FLOORS = {
    "models": 0,
    "diffusion": 0,
    "data": 1,
    "stream": 2,
    "eval": 3,
    "train": 4,
    "distill": 5,
    "pipeline": 6,
    "bench": 6,
    "studies": 6,  # the package the lab tooling had inside trackstream/: kept to measure older checkouts
}
PREFIX = "trackstream."
DMD_TRIP = "trackstream.train.dmd.build:build_dmd:cfg"
# where the DMD builder lived before (an older checkout measured with --before): file -> trip
OLD_DMD_TRIPS = {
    "stages/dmd.py": "trackstream.stages.dmd:build_dmd:cfg",  # before the application was trackstream.train
    "stages/distill.py": "trackstream.stages.distill:build_dmd:cfg",  # before one file per stage
    "distill/stages.py": "trackstream.distill.stages:build_dmd:cfg",  # before stages/
}


def floors(repo: Path) -> dict[str, int]:
    path = repo / "layers.json"
    return json.loads(path.read_text()) if path.is_file() else FLOORS


def _imports(tree: ast.AST, package: str) -> list[tuple[str, list[str]]]:
    """(module, imported names) for every import of a trackstream module; relative ones resolved against
    ``package`` (the importing module's package, dotted)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith(PREFIX)]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if module.startswith(PREFIX):
                out.append((module, [a.name for a in node.names]))
    return out


def measure(repo: Path) -> dict:
    root = repo / "trackstream"
    files, lines = Counter(), Counter()
    edges: dict[tuple[str, str], int] = defaultdict(int)
    private = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        pkg = rel.parts[0] if len(rel.parts) > 1 else "(root)"
        text = path.read_text()
        files[pkg] += 1
        lines[pkg] += text.count("\n")
        me = PREFIX + ".".join(rel.with_suffix("").parts)
        package = me.removesuffix(".__init__") if path.name == "__init__.py" else me.rsplit(".", 1)[0]
        for module, names in _imports(ast.parse(text, str(path)), package):
            dep = module.removeprefix(PREFIX).split(".")[0]
            if dep != pkg and pkg != "(root)":
                edges[(pkg, dep)] += 1
            if module != me:
                private += [f"{rel}: {module}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
    table = floors(repo)
    up = [f"{a} -> {b}" for (a, b) in edges if table.get(b, -1) > table.get(a, 99)]
    mutual = sorted({" <-> ".join(sorted((a, b))) for (a, b) in edges if (b, a) in edges})
    return {
        "floors": table,
        "files": dict(files),
        "lines": dict(lines),
        "imports": {f"{a} -> {b}": n for (a, b), n in sorted(edges.items())},
        "arrows_up": sorted(up),
        "mutual_packages": mutual,
        "private_imports": private,
    }


class _Index:
    """Every function of trackstream/ by module and qualified name, and each module's imported names."""

    def __init__(self, root: Path):
        self.root, self.defs, self.names = root, {}, {}
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root.parent)
            mod = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
            tree = ast.parse(path.read_text(), str(path))
            pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
            names = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1] if node.level else []
                    src = ".".join(base + ([node.module] if node.module else []))
                    for a in node.names:
                        names[a.asname or a.name] = (src, a.name)
            self.names[mod] = names
            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self.defs[(mod, node.name)] = (path, node)
                elif isinstance(node, ast.ClassDef):
                    self.defs[(mod, node.name)] = (path, node)  # a call of the class: __init__ / __post_init__
                    for sub in node.body:
                        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                            self.defs[(mod, f"{node.name}.{sub.name}")] = (path, sub)

    def resolve(self, mod: str, cls: str | None, func: ast.expr):
        """The (module, qualname) a call's target names, through local definitions, imports and self."""
        if isinstance(func, ast.Name):
            name = func.id
            for key in ((mod, f"{name}.__init__"), (mod, name)):
                if key in self.defs:
                    return key
            src = self.names.get(mod, {}).get(name)
            for _ in range(4):  # follow re-exports (a package's __init__ importing from its modules)
                if not src:
                    return None
                for key in ((src[0], f"{src[1]}.__init__"), src):
                    if key in self.defs:
                        return key
                src = self.names.get(src[0], {}).get(src[1])
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self" and cls:
            key = (mod, f"{cls}.{func.attr}")
            return key if key in self.defs else None
        return None


def _root(expr: ast.expr):
    while isinstance(expr, (ast.Attribute, ast.Subscript)):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def _part(expr: ast.expr, tainted: set) -> bool:
    """Whether ``expr`` is a tainted name or an attribute / item chain on one."""
    return isinstance(expr, (ast.Name, ast.Attribute, ast.Subscript)) and _root(expr) in tainted


def trip(repo: Path, module: str, function: str, param: str) -> dict:
    """Follow ``param`` of ``module.function`` through every call that hands it (or a part of it, an
    attribute or item chain, or a local name bound to one) to another trackstream function. Returns the
    files in the order first entered (depth first, as the code is written), the distinct files, and the
    climbs: moves along that order from a file to one on a higher floor."""
    idx = _Index(repo / "trackstream")
    order, seen = [], set()

    table = floors(repo)

    def floor(path: Path) -> int:
        return table.get(path.relative_to(repo / "trackstream").parts[0], 9)

    def visit(key, arg):
        if (key, arg) in seen:
            return
        seen.add((key, arg))
        path, fn = idx.defs[key]
        order.append(path)
        mod, qual = key
        cls = qual.split(".")[0] if "." in qual else None
        tainted = {arg}
        for node in ast.walk(fn):  # names bound to the config or a part of it
            if isinstance(node, ast.Assign) and _part(node.value, tainted):
                tainted |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        calls = sorted((n for n in ast.walk(fn) if isinstance(n, ast.Call)), key=lambda n: (n.lineno, n.col_offset))
        for call in calls:
            target = idx.resolve(mod, cls, call.func)
            if target is None:
                continue
            node = idx.defs[target][1]
            handed = [i for i, a in enumerate(call.args) if _part(a, tainted)]
            handed += [kw.arg for kw in call.keywords if kw.arg and _part(kw.value, tainted)]
            if not handed:
                continue
            if isinstance(node, ast.ClassDef):  # a class built from the config (a dataclass: no __init__)
                post = (target[0], f"{target[1]}.__post_init__")
                order.append(idx.defs[post][0] if post in idx.defs else idx.defs[target][0])
                continue
            params = [a.arg for a in node.args.args]
            if params and params[0] in ("self", "cls"):
                params = params[1:]
            for h in handed:
                if isinstance(h, str):
                    visit(target, h)
                elif h < len(params):
                    visit(target, params[h])

    visit((module, function), param)
    moves = [p for i, p in enumerate(order) if i == 0 or p != order[i - 1]]
    climbs = sum(floor(b) > floor(a) for a, b in zip(moves, moves[1:]))
    files = sorted({str(p.relative_to(repo)) for p in order})
    return {
        "start": f"{module}:{function}:{param}",
        "files": files,
        "climbs": climbs,
        "order": [str(p.relative_to(repo)) for p in moves],
    }


def render(m: dict) -> str:
    table = m["floors"]
    cells = []
    for pkg in sorted(m["files"], key=lambda p: (table.get(p, 9), p)):
        deps = ", ".join(f"{k.split(' -> ')[1]}: {n}" for k, n in m["imports"].items() if k.startswith(pkg + " -> "))
        floor = table.get(pkg, "?") if pkg != "(root)" else ""
        cells.append([pkg, floor, m["files"][pkg], m["lines"][pkg], deps])
    rows = markdown_table(["package", "floor", "files", "lines", "imports (package: import statements)"], cells)
    rows += [
        "",
        f"arrows up: {', '.join(m['arrows_up']) or 'none'}",
        f"packages importing each other: {', '.join(m['mutual_packages']) or 'none'}",
        f"imports of another module's private names: {len(m['private_imports'])}",
    ]
    rows += [f"  {p}" for p in m["private_imports"]]
    if "trip" in m:
        t = m["trip"]
        rows.append(f"trip of {t['start']}: {len(t['files'])} files, {t['climbs']} climbs back up the floors")
        rows += [f"  {f}" for f in t["order"]]
    return "\n".join(rows)


def render_change(before: dict, after: dict) -> str:
    """Before -> after per package: files, lines, import statements into other packages; then the rest."""

    def out_imports(m, pkg):
        return sum(n for k, n in m["imports"].items() if k.startswith(pkg + " -> "))

    pkgs = sorted(set(before["files"]) | set(after["files"]), key=lambda p: (after["floors"].get(p, 9), p))
    cells = []
    for p in pkgs:
        f0, f1 = before["files"].get(p, 0), after["files"].get(p, 0)
        n0, n1 = before["lines"].get(p, 0), after["lines"].get(p, 0)
        cells.append([p, f"{f0} → {f1}", f"{n0} → {n1}", f"{out_imports(before, p)} → {out_imports(after, p)}"])
    total = [sum(m[k].values()) for m in (before, after) for k in ("files", "lines")]
    # the total has no import count of its own: a blank that does not apply
    cells.append(["all of `trackstream/`", f"{total[0]} → {total[2]}", f"{total[1]} → {total[3]}", None])
    rows = markdown_table(
        [
            "package",
            "files before → after",
            "lines before → after",
            "import statements into other packages before → after",
        ],
        cells,
    )
    for key, label in (
        ("arrows_up", "arrows up"),
        ("mutual_packages", "packages importing each other"),
        ("private_imports", "imports of another module's private names"),
    ):
        rows.append(f"\n{label}: {len(before[key])} → {len(after[key])}")
    if "trip" in before and "trip" in after:
        t0, t1 = before["trip"], after["trip"]
        rows.append(
            f"\ntrip of {t1['start']}: {len(t0['files'])} → {len(t1['files'])} files, "
            f"{t0['climbs']} → {t1['climbs']} climbs back up the floors"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--json", type=Path, default=None, help="also write the measures here")
    ap.add_argument("--trip", default=DMD_TRIP, help="MODULE:FUNCTION:PARAM to follow (default: %(default)s)")
    ap.add_argument("--before", type=Path, default=None, help="another checkout: print a before -> after table")
    args = ap.parse_args()

    def full(repo: Path) -> dict:
        start = args.trip
        if start == DMD_TRIP and not (repo / "trackstream" / "train" / "dmd.py").is_file():
            start = next((t for f, t in OLD_DMD_TRIPS.items() if (repo / "trackstream" / f).is_file()), start)
        m = measure(repo)
        m["trip"] = trip(repo, *start.split(":"))
        return m

    m = full(args.repo)
    print(render(m) if args.before is None else render_change(full(args.before), m))
    if args.json:
        args.json.write_text(json.dumps(m, indent=2) + "\n")


if __name__ == "__main__":
    main()
