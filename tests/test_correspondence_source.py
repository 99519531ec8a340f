"""The teacher's correspondence aid: the supervised head copies from frame 0 (``first``) or from the previous
latent frame (``previous``, content carried from frame to frame)."""

import pytest
import torch

from trackstream.train.teacher.objective import TeacherConfig
from trackstream.trainer.correspondence import correspondence_loss, correspondence_targets


def _track(speed: float, T: int = 9):
    tr = torch.zeros(1, T, 1, 2)
    for t in range(T):
        tr[0, t, 0] = torch.tensor([min(7.0, speed * t), 1.0])  # along token row 0 of an 8 x 8 frame
    return tr, torch.ones(1, T, 1, dtype=torch.bool)


def test_previous_source_points_at_the_previous_latent_frame():
    tr, vis = _track(1.2)  # token column 0 until pixel frame 4 (x = 4.8), then column 1
    first = correspondence_targets(tr, vis, grid=(3, 2, 2), token_px=(4, 4), source="first")
    prev = correspondence_targets(tr, vis, grid=(3, 2, 2), token_px=(4, 4), source="previous")
    # latent 1 (pixel frames 1-4) takes from frame 0 either way; latent 2 (frames 5-8, column 1) takes from
    # frame 0's column 0 (first) or from latent 1's last pixel frame, column 1 (previous)
    assert first[0].nonzero().tolist() == [[0, 0], [1, 0], [5, 0]]
    assert prev[0].nonzero().tolist() == [[0, 0], [1, 0], [5, 1]]


def test_previous_source_loss_reads_the_previous_frames_keys():
    tr, vis = _track(1.2)
    target = correspondence_targets(tr, vis, grid=(3, 2, 2), token_px=(4, 4), source="previous")
    logits = torch.full((1, 8, 12), -30.0)  # queries of frames 1-2 over the keys of frames 0-2
    logits[0, 0, 0] = logits[0, 1, 0] = 30.0  # frame-1 queries attend to frame 0's key 0
    logits[0, 5, 4 + 1] = 30.0  # the frame-2 query attends to frame 1's key 1
    assert float(correspondence_loss(logits, target, source="previous")) < 1e-6
    assert float(correspondence_loss(logits, target, source="first")) > 10  # the frame-2 row reads frame 0 there


def test_the_source_is_checked():
    with pytest.raises(ValueError, match="correspondence_source"):
        TeacherConfig(correspondence_source="last")
