"""Every relative link of the docs resolves: its target file exists, and its ``#anchor`` is the slug of a heading
of that file as GitHub makes it (lower case, punctuation but ``-`` and ``_`` dropped, spaces to ``-``, a repeated
heading suffixed ``-1``, ``-2``, ...). Links inside code are not links."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    ROOT / "README.md",
    *(ROOT / d / "README.md" for d in ("conf", "lab", "slurm")),
    *sorted((ROOT / "docs").rglob("*.md")),
]
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```+|~~~+)")


def _prose(text: str) -> list[str]:
    """The lines outside fenced code, each with its inline code spans blanked."""
    lines, fence = [], None
    for line in text.splitlines():
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
        else:
            lines.append(re.sub(r"`+[^`]*`+", "``", line))
    return lines


def slug(heading: str) -> str:
    text = re.sub(r"`|\*\*|__|<[^>]+>", "", heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading: its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _headings_raw(page: Path) -> list[str]:
    """The heading lines of ``page`` as written (inline code included), outside fenced code."""
    out, fence = [], None
    for line in page.read_text().splitlines():
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
        elif re.match(r"^#{1,6}\s", line):
            out.append(re.sub(r"^#{1,6}\s+", "", line).rstrip("# ").strip())
    return out


def heading_slugs(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in _headings_raw(page):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links() -> list[str]:
    broken = []
    for page in PAGES:
        for no, line in enumerate(_prose(page.read_text()), 1):
            for target in LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                    continue
                path, _, anchor = target.partition("#")
                dest = (page.parent / path).resolve() if path else page
                where = f"{page.relative_to(ROOT)}: ({target})"
                if not dest.exists():
                    broken.append(f"{where}: no such file")
                elif anchor and (dest.suffix != ".md" or anchor not in heading_slugs(dest)):
                    broken.append(f"{where}: no heading #{anchor}")
    return broken


def test_slugs_are_githubs():
    assert slug("Prompt switching mid-stream: `--prompt-schedule`") == "prompt-switching-mid-stream---prompt-schedule"
    assert slug("The shipped student (`assets/tiny-student/`)") == "the-shipped-student-assetstiny-student"
    assert slug("Speed at real scale (one H200)") == "speed-at-real-scale-one-h200"
    assert slug("Real videos → shards") == "real-videos--shards"


def test_every_relative_link_resolves():
    broken = broken_links()
    assert not broken, "\n".join(broken)
