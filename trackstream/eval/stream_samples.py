"""Pictures of the held-out samples for ``make run``'s report: the contact sheet of every model's frames and
the per-sample side-by-side videos (ground truth | teacher | students, the input tracks drawn on each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trackstream.eval.scorebook import input_tracks

__all__ = ["write_contact_sheet", "write_side_by_sides"]


def write_contact_sheet(path: Path, rows: list[tuple[str, np.ndarray]], *, every: int = 4) -> Path:
    """A PNG of held-out samples: for each clip one row per model (``rows``: label, uint8 frames
    [clips, T, H, W, 3]), every ``every``-th frame left to right. Lets a reader see what the EPE
    figures were measured on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("write_contact_sheet: no rows to draw")
    clips, T = rows[0][1].shape[:2]
    idx = list(range(0, T, every))
    fig, axes = plt.subplots(clips * len(rows), 1, figsize=(1.1 * len(idx), 1.2 * clips * len(rows)), squeeze=False)
    for c in range(clips):
        for r, (label, frames) in enumerate(rows):
            ax = axes[c * len(rows) + r, 0]
            ax.imshow(np.concatenate([frames[c, t] for t in idx], axis=1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_ylabel(f"{c}: {label}", rotation=0, ha="right", va="center", fontsize=7)
    axes[-1, 0].set_xlabel("frames " + ", ".join(map(str, idx)), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def write_side_by_sides(
    run_dir: Path, clips: list[dict], videos: dict[str, np.ndarray], *, num_tracks: int | None, fps: int, gifs: int
) -> list[dict]:
    """Per held-out sample ``samples/<id>/side_by_side.mp4`` (ground truth | teacher | students, the
    input tracks drawn on each), and a GIF for the first ``gifs`` samples (report.md embeds them)."""
    from trackstream.data.video_io import write_mp4
    from trackstream.stream.visualize import side_by_side, write_gif

    out = []
    for i, clip in enumerate(clips):
        tr, vi, counts = input_tracks([clip], num_tracks)
        m = counts[0]
        panels = [(label, v[i]) for label, v in videos.items()]
        sbs = side_by_side(panels, tr[0, :, :m].numpy(), vi[0, :, :m].numpy())
        folder = Path(run_dir) / "samples" / str(clip["meta"]["id"])
        folder.mkdir(parents=True, exist_ok=True)
        write_mp4(str(folder / "side_by_side.mp4"), sbs, fps=fps)
        entry = {
            "id": str(clip["meta"]["id"]),
            "mp4": str((folder / "side_by_side.mp4").relative_to(run_dir)),
            "panels": list(videos),
        }
        if i < gifs:
            write_gif(folder / "side_by_side.gif", sbs, fps=fps, max_width=400)
            entry["gif"] = str((folder / "side_by_side.gif").relative_to(run_dir))
        out.append(entry)
    return out
