"""The one markdown table writer (trackstream/eval/tables.py): header, rule, rows; right-aligned columns; the
blank that does not apply ("| |") beside the figure not measured ("|  |"); the drag bench's spaced rule; a row
of the wrong width refused with its number and cells."""

import pytest

from trackstream.eval.tables import markdown_table


def test_header_rule_and_rows():
    lines = markdown_table(["name", "value"], [["a", "1.000"], ("b", 2)])
    assert lines == ["| name | value |", "|---|---|", "| a | 1.000 |", "| b | 2 |"]
    assert markdown_table(["only"], []) == ["| only |", "|---|"]
    assert markdown_table(["a", "b"], iter([iter(["x", "y"])])) == ["| a | b |", "|---|---|", "| x | y |"]


def test_alignment_per_column():
    assert markdown_table(["recipe", "GiB", "s"], [], align="lrr")[1] == "|---|---:|---:|"
    assert markdown_table(["recipe", "GiB"], [], align=["l", "r"])[1] == "|---|---:|"
    for bad in ("lr", "lrx", "lrrr"):
        with pytest.raises(ValueError, match="align"):
            markdown_table(["recipe", "GiB", "s"], [], align=bad)


def test_a_blank_that_does_not_apply_and_a_missing_figure():
    lines = markdown_table(["video", "with", "without"], [["*floor*", "0.4", None], ["model", "", "6.0"]])
    assert lines[2:] == ["| *floor* | 0.4 | |", "| model |  | 6.0 |"]


def test_the_spaced_rule():
    assert markdown_table(["row", "ObjMC ↓"], [["a", "1.00"]], spaced_rule=True) == [
        "| row | ObjMC ↓ |",
        "| --- | --- |",
        "| a | 1.00 |",
    ]


def test_a_row_of_the_wrong_width_is_refused():
    with pytest.raises(ValueError, match=r"table row 1 has 1 cells, the header 2 .*'b'"):
        markdown_table(["name", "value"], [["a", "1"], ["b"]])
    with pytest.raises(ValueError, match="table row 0 has 3 cells, the header 2"):
        markdown_table(["name", "value"], [["a", "1", "extra"]])
    # an error row whose message runs on where its figures would be, when asked for; never a wider one
    assert markdown_table(["setup", "mode", "frames/s", "ms"], [["big", "eager", "error: x"]], short_rows=True)[2] == (
        "| big | eager | error: x |"
    )
    with pytest.raises(ValueError, match="table row 0 has 3 cells"):
        markdown_table(["name", "value"], [["a", "1", "extra"]], short_rows=True)
    with pytest.raises(ValueError, match="header"):
        markdown_table([], [])
