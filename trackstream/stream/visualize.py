"""Videos a person can look at: side-by-side panels with the input tracks drawn, as mp4 and GIF.

``side_by_side`` puts several uint8 videos of one clip next to each other (ground truth | teacher |
students ...), each enlarged with nearest-neighbour so 64-px frames stay legible, with a label
above each panel and the input tracks drawn on every panel: a dot at the position the track asks
for at that frame and a short trail of where it came from. A model that follows the tracks keeps
its content under the dots; one that ignores them lets the dots slide over the content.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["track_colours", "draw_tracks", "side_by_side", "write_gif"]

LABEL_PX = 14  # height of the label strip above each panel (output pixels)


def track_colours(n: int) -> np.ndarray:
    """[n, 3] uint8 RGB, evenly spaced hues (the same track gets the same colour in every panel)."""
    import cv2

    hues = np.linspace(0, 179, num=max(1, n), endpoint=False).astype(np.uint8)
    hsv = np.stack([hues, np.full_like(hues, 220), np.full_like(hues, 255)], 1)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0][:n]


def draw_tracks(
    frames: np.ndarray,
    tracks: np.ndarray,
    visibility: np.ndarray,
    *,
    scale: int = 3,
    max_points: int = 24,
    trail: int = 4,
) -> np.ndarray:
    """frames [T, H, W, 3] uint8, tracks [T, N, 2] (x, y) px, visibility [T, N] -> [T, H*s, W*s, 3].

    At most ``max_points`` tracks (evenly chosen) so the frame stays visible under them."""
    import cv2

    T, H, W, _ = frames.shape
    big = np.repeat(np.repeat(frames, scale, axis=1), scale, axis=2).copy()  # [T, H*s, W*s, 3]
    n = tracks.shape[1]
    chosen = np.unique(np.linspace(0, n - 1, num=min(n, max_points)).round().astype(int)) if n else np.array([], int)
    colours = track_colours(len(chosen))

    def px(p: np.ndarray) -> tuple[int, int]:
        return int(round((float(p[0]) + 0.5) * scale - 0.5)), int(round((float(p[1]) + 0.5) * scale - 0.5))

    for t in range(T):
        canvas = np.ascontiguousarray(big[t])
        for k, j in enumerate(chosen):
            colour = tuple(int(c) for c in colours[k])
            run = [s for s in range(max(0, t - trail), t + 1) if visibility[s, j] and np.isfinite(tracks[s, j]).all()]
            for a, b in zip(run, run[1:]):
                cv2.line(canvas, px(tracks[a, j]), px(tracks[b, j]), colour, 1, lineType=cv2.LINE_AA)
            if visibility[t, j] and np.isfinite(tracks[t, j]).all():
                cv2.circle(canvas, px(tracks[t, j]), max(2, scale), (0, 0, 0), -1, lineType=cv2.LINE_AA)
                cv2.circle(canvas, px(tracks[t, j]), max(1, scale - 1), colour, -1, lineType=cv2.LINE_AA)
        big[t] = canvas
    return big


def side_by_side(
    panels: list[tuple[str, np.ndarray]],
    tracks: np.ndarray | None = None,
    visibility: np.ndarray | None = None,
    *,
    scale: int = 3,
    gap: int = 4,
) -> np.ndarray:
    """``panels``: (label, uint8 [T, H, W, 3]) of one clip, same T/H/W -> uint8 [T, LABEL + H*s, total W, 3]."""
    import cv2

    if not panels:
        raise ValueError("side_by_side: no panels")
    shapes = {p.shape for _, p in panels}
    if len(shapes) != 1:
        raise ValueError(f"side_by_side: panels differ in shape {sorted(shapes)}; all must be [T, H, W, 3]")
    T, H, W, _ = panels[0][1].shape
    cols = []
    for label, frames in panels:
        if tracks is not None:
            body = draw_tracks(
                frames, tracks, visibility if visibility is not None else np.ones(tracks.shape[:2], bool), scale=scale
            )
        else:
            body = np.repeat(np.repeat(frames, scale, axis=1), scale, axis=2)
        head = np.full((T, LABEL_PX, W * scale, 3), 255, np.uint8)
        strip = np.ascontiguousarray(head[0])
        cv2.putText(
            strip,
            label[: max(4, W * scale // 7)],
            (2, LABEL_PX - 4),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.36,
            (0, 0, 0),
            1,
            lineType=cv2.LINE_AA,
        )
        head[:] = strip
        cols.append(np.concatenate([head, body], axis=1))
        cols.append(np.full((T, LABEL_PX + H * scale, gap, 3), 255, np.uint8))
    return np.concatenate(cols[:-1], axis=2)


def write_gif(path: Path | str, frames: np.ndarray, *, fps: float, max_width: int | None = None) -> Path:
    """uint8 [T, H, W, 3] -> an endlessly looping GIF (optionally shrunk to ``max_width``)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    if max_width and images[0].width > max_width:
        size = (max_width, round(images[0].height * max_width / images[0].width))
        images = [im.resize(size, Image.NEAREST) for im in images]
    images = [im.quantize(colors=64, method=Image.Quantize.MEDIANCUT) for im in images]
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0, optimize=True
    )
    return path
