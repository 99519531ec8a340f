"""The package structure of `trackstream/`, measured from the code's imports: files and lines per package,
the package-to-package import table, arrows that run up the floors, pairs of packages that import each
other, and imports of another module's private names.

    python lab/structure.py [--repo DIR] [--json OUT]

Floors are the house's (models, diffusion < data < stream < eval < train < distill < pipeline, bench); a
package the table does not know is listed with floor "?".
"""

from __future__ import annotations

import argparse
import ast
import json
from collections import Counter, defaultdict
from pathlib import Path

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
    "studies": 6,
}
PREFIX = "trackstream."


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
    up = [f"{a} -> {b}" for (a, b) in edges if FLOORS.get(b, -1) > FLOORS.get(a, 99)]
    mutual = sorted({" <-> ".join(sorted((a, b))) for (a, b) in edges if (b, a) in edges})
    return {
        "files": dict(files),
        "lines": dict(lines),
        "imports": {f"{a} -> {b}": n for (a, b), n in sorted(edges.items())},
        "arrows_up": sorted(up),
        "mutual_packages": mutual,
        "private_imports": private,
    }


def render(m: dict) -> str:
    rows = ["| package | floor | files | lines | imports (package: import statements) |", "|---|---|---|---|---|"]
    for pkg in sorted(m["files"], key=lambda p: (FLOORS.get(p, 9), p)):
        deps = ", ".join(f"{k.split(' -> ')[1]}: {n}" for k, n in m["imports"].items() if k.startswith(pkg + " -> "))
        rows.append(
            f"| {pkg} | {FLOORS.get(pkg, '?') if pkg != '(root)' else ''} | {m['files'][pkg]} | "
            f"{m['lines'][pkg]} | {deps} |"
        )
    rows += [
        "",
        f"arrows up: {', '.join(m['arrows_up']) or 'none'}",
        f"packages importing each other: {', '.join(m['mutual_packages']) or 'none'}",
        f"imports of another module's private names: {len(m['private_imports'])}",
    ]
    rows += [f"  {p}" for p in m["private_imports"]]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--json", type=Path, default=None, help="also write the measures here")
    args = ap.parse_args()
    m = measure(args.repo)
    print(render(m))
    if args.json:
        args.json.write_text(json.dumps(m, indent=2) + "\n")


if __name__ == "__main__":
    main()
