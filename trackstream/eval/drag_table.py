"""The drag benchmark's figures over scenes (``aggregate``) and its tables (``table``): one row per way to drag,
then the floors every quality table shows (``FLOOR_ROWS``: the scenes' ground-truth videos, and those videos
through the codec, scored by the same protocol: the tracker's and the codec's own error, the best any
student can reach; and the frozen first frame: the object never moves, the error of ignoring the drag),
and ObjMC / point error / object error by scene kind. The object columns (``drag_metrics.object_track``)
stand beside ObjMC: where the object is found from its appearance, and how much of it is still there.
The placement column: where a row with tracks laid the object's points (``drag_bench``'s ``--placements``; "—"
for a row that lays none, whose point error is on the token centres)."""

from __future__ import annotations

import numpy as np

from trackstream.eval.drag_metrics import objmc
from trackstream.eval.tables import markdown_table

__all__ = ["FLOOR_ROWS", "aggregate", "table"]

FLOOR_ROWS = ("ground truth", "codec round trip", "frozen first frame")


def _mean(items: list[dict], key: str) -> float | None:
    values = [s[key] for s in items if s.get(key) is not None]
    return float(np.mean(values)) if values else None


def aggregate(per_row: dict[str, list[dict]], base_row: str) -> dict[str, dict]:
    """Per row, the scenes' figures: ObjMC over every scene's entity path, the other scores' means (RF: rows
    that stream; the background against the undragged stream: every row but that stream itself)."""
    agg = {}
    for row, items in per_row.items():
        kinds = sorted({s["kind"] for s in items})
        agg[row] = {
            "objmc": objmc([[s["entity_pred"]] for s in items], [[s["entity_gt"]] for s in items]),
            **{
                k: _mean(items, k)
                for k in ("point_error", "object_error", "object_kept", "dai", "psnr_gt", "ssim_gt", "bg_psnr_gt", "rf")
            },
            "bg_psnr_undragged": (
                float(np.mean([min(s["bg_psnr_undragged"], 99.0) for s in items])) if row != base_row else None
            ),
            "scenes": len(items),
            # ObjMC over each kind's scenes: rotations barely move the entity point, translations do
            "objmc_by_kind": {
                k: objmc(
                    [[s["entity_pred"]] for s in items if s["kind"] == k],
                    [[s["entity_gt"]] for s in items if s["kind"] == k],
                )
                for k in kinds
            },
            **{
                f"{m}_by_kind": {k: _mean([s for s in items if s["kind"] == k], m) for k in kinds}
                for m in ("point_error", "object_error", "object_kept")
            },
        }
    return agg


def _cell(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _by_kind(a: dict, kind: str) -> str:
    obj = [(a.get(f"object_{m}_by_kind") or {}).get(kind) for m in ("error", "kept")]  # older results lack them
    point = _cell(a["point_error_by_kind"][kind], 2)
    return f"{a['objmc_by_kind'][kind]:.2f} / {point} / {_cell(obj[0], 2)} / {_cell(obj[1], 2)}"


def _names(name: str, a: dict) -> list[str]:
    """The row's name and placement cells (results before placements: the key, "—")."""
    return [a.get("row", name), a.get("placement") or "—"]


def table(result: dict) -> str:
    head = [
        "row",
        "placement",
        "ObjMC ↓",
        "object err ↓",
        "object kept ↑",
        "point err ↓",
        "DAI ↓",
        "bg PSNR vs undragged ↑",
        "bg PSNR vs GT ↑",
        "PSNR vs GT ↑",
        "SSIM vs GT ↑",
        "RF",
    ]
    rows = [
        [
            *_names(row, a),
            f"{a['objmc']:.2f}",
            _cell(a.get("object_error"), 2),
            _cell(a.get("object_kept"), 2),
            _cell(a["point_error"], 2),
            f"{a['dai']:.4f}",
            _cell(a["bg_psnr_undragged"], 2),
            f"{a['bg_psnr_gt']:.2f}",
            _cell(a["psnr_gt"], 2),
            _cell(a["ssim_gt"], 3),
            _cell(a["rf"], 2),
        ]
        for row, a in result["rows"].items()
    ]
    kinds = sorted(next(iter(result["rows"].values()))["point_error_by_kind"])
    by_kind = [[*_names(row, a), *(_by_kind(a, k) for k in kinds)] for row, a in result["rows"].items()]
    # spaced rules ("| --- |"): the drag tables pasted in docs/bench/ were written so
    lines = markdown_table(head, rows, spaced_rule=True) + [""]
    lines += markdown_table(
        ["row", "placement", *(f"{k} ObjMC / point err / object err / kept" for k in kinds)], by_kind, spaced_rule=True
    )
    return "\n".join(lines) + "\n"
