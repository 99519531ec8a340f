"""The one markdown table writer of the product: report.md, the eval command's table.md, the placement and drag
benches' tables, the benches' and the memory plan's tables all go through ``markdown_table``.

The cells come formatted (strings): each table keeps its own number formats; the writer only lays out the
header, the rule and the rows, and refuses a row whose width is not the header's (a table that would render
shifted)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["markdown_table"]

_RULE = {"l": "---", "r": "---:"}


def _line(cells: Sequence[object]) -> str:
    # None is written "| |", every other cell " {cell} |": the tables pasted in docs/ tell a blank that does
    # not apply ("| |") from a figure that is missing ("|  |"), so both stay as they were written
    return "|" + "".join(" |" if c is None else f" {c} |" for c in cells)


def markdown_table(
    head: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    align: str | Sequence[str] | None = None,
    short_rows: bool = False,
    spaced_rule: bool = False,
) -> list[str]:
    """The lines of a markdown table: the header ``head``, the rule, then one line per row of ``rows``.

    A cell is written as ``str(cell)`` with a space on either side (``""``, a figure not measured, gives
    ``|  |``); ``None`` is a cell that does not apply to its row, written ``| |`` (a floor's "EPE without
    tracks", the parameter count of a total).

    ``align``: one letter per column, ``"l"`` (rule ``---``) or ``"r"`` (``---:``, numbers), e.g. ``"lrr"``;
    None: every column left. ``short_rows``: a row may have fewer cells than the header (an error row whose
    message runs on where its figures would be; markdown leaves the rest empty). ``spaced_rule``: the rule is
    written ``| --- |`` like the cells, as the drag bench's tables are.

    A row wider than the header, or narrower without ``short_rows``, is a ValueError naming the row.
    """
    head = list(head)
    if not head:
        raise ValueError("a markdown table needs at least one header cell")
    align = "l" * len(head) if align is None else list(align)
    if len(align) != len(head) or any(a not in _RULE for a in align):
        raise ValueError(f"align {align!r}: one of {sorted(_RULE)} per column of {head!r}")
    rule = [_RULE[a] for a in align]
    lines = [_line(head), _line(rule) if spaced_rule else "|" + "".join(f"{r}|" for r in rule)]
    for i, row in enumerate(rows):
        row = list(row)
        if len(row) > len(head) or (len(row) < len(head) and not short_rows):
            raise ValueError(f"table row {i} has {len(row)} cells, the header {len(head)} ({head!r}): {row!r}")
        lines.append(_line(row))
    return lines
