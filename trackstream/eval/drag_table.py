"""The drag benchmark's figures over scenes (``aggregate``) and its tables (``table``): one row per way to drag,
then the floors every quality table shows (``FLOOR_ROWS``: the scenes' ground-truth videos, and those videos
through the codec, scored by the same protocol: the tracker's and the codec's own error, the best any
student can reach), and ObjMC / point error by scene kind."""

from __future__ import annotations

import numpy as np

from trackstream.eval.drag_metrics import objmc

__all__ = ["FLOOR_ROWS", "aggregate", "table"]

FLOOR_ROWS = ("ground truth", "codec round trip")


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
            **{k: _mean(items, k) for k in ("point_error", "dai", "psnr_gt", "ssim_gt", "bg_psnr_gt", "rf")},
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
            "point_error_by_kind": {
                k: float(np.mean([s["point_error"] for s in items if s["kind"] == k])) for k in kinds
            },
        }
    return agg


def _cell(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(result: dict) -> str:
    head = (
        "| row | ObjMC ↓ | point err ↓ | DAI ↓ | bg PSNR vs undragged ↑ | bg PSNR vs GT ↑ | PSNR vs GT ↑ | "
        "SSIM vs GT ↑ | RF |"
    )
    lines = [head, "|" + " --- |" * 9]
    for row, a in result["rows"].items():
        lines.append(
            f"| {row} | {a['objmc']:.2f} | {a['point_error']:.2f} | {a['dai']:.4f} | "
            f"{_cell(a['bg_psnr_undragged'], 2)} | {a['bg_psnr_gt']:.2f} | {_cell(a['psnr_gt'], 2)} | "
            f"{_cell(a['ssim_gt'], 3)} | {_cell(a['rf'], 2)} |"
        )
    kinds = sorted(next(iter(result["rows"].values()))["point_error_by_kind"])
    lines += [
        "",
        "| row | " + " | ".join(f"{k} ObjMC / point err" for k in kinds) + " |",
        "|" + " --- |" * (1 + len(kinds)),
    ]
    for row, a in result["rows"].items():
        lines.append(
            f"| {row} | "
            + " | ".join(f"{a['objmc_by_kind'][k]:.2f} / {a['point_error_by_kind'][k]:.2f}" for k in kinds)
            + " |"
        )
    return "\n".join(lines) + "\n"
