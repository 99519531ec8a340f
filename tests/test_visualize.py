"""Side-by-side videos with the input tracks drawn (trackstream/stream/visualize.py)."""

import numpy as np
import pytest

from trackstream.stream.visualize import LABEL_PX, draw_tracks, side_by_side, track_colours, write_gif


def _clip(T=5, H=16, W=20, value=40):
    return np.full((T, H, W, 3), value, np.uint8)


def test_tracks_are_drawn_where_the_track_says_in_each_frame():
    T, scale = 4, 3
    tracks = np.stack([np.array([[2.0 + 3 * t, 5.0]]) for t in range(T)]).astype(np.float32)  # [T, 1, 2], moving right
    vis = np.ones((T, 1), bool)
    out = draw_tracks(_clip(T), tracks, vis, scale=scale)
    assert out.shape == (T, 16 * scale, 20 * scale, 3)
    colour = track_colours(1)[0]
    for t in range(T):
        x, y = (tracks[t, 0] + 0.5) * scale - 0.5
        assert (out[t, int(round(y)), int(round(x))] == colour).all(), t
        assert (out[t, 0, 0] == 40).all()  # far from the track: the video itself
    hidden = draw_tracks(_clip(T), tracks, np.zeros((T, 1), bool), scale=scale)
    assert (hidden == 40).all()  # an invisible track is not drawn


def test_side_by_side_lays_out_labelled_panels():
    panels = [("ground truth", _clip(value=10)), ("teacher", _clip(value=200))]
    out = side_by_side(panels, scale=2, gap=4)
    assert out.shape == (5, LABEL_PX + 32, 2 * 40 + 4, 3)
    assert (out[:, LABEL_PX:, :40] == 10).all() and (out[:, LABEL_PX:, 44:] == 200).all()
    assert (out[:, :LABEL_PX, :40] < 255).any()  # the label is written
    with pytest.raises(ValueError, match="differ in shape"):
        side_by_side([("a", _clip()), ("b", _clip(T=3))])


def test_write_gif_loops_every_frame(tmp_path):
    from PIL import Image

    frames = np.stack([np.full((8, 12, 3), 30 * t, np.uint8) for t in range(6)])
    path = write_gif(tmp_path / "x.gif", frames, fps=8, max_width=6)
    im = Image.open(path)
    assert im.n_frames == 6 and im.size == (6, 4) and im.info.get("loop") == 0
