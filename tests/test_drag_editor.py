"""DragStream on the streaming engine: targets land where the geometry says (a translated and a
rotated box), the optimisation lowers its loss, an abandoned edit leaves the stream bit-identical, a
drag with nothing to do is exactly the engine's chunk, and the drag's tracks pin what must not move."""

import numpy as np
import pytest
import torch

from trackstream.diffusion.schedule import add_noise
from trackstream.models.codecs import build_codec
from trackstream.models.streaming import StreamConfig
from trackstream.models.tracks import sample_track_ids
from trackstream.stream.drag.editor import DragEditor
from trackstream.stream.drag.instructions import DragInstruction, Rotation2D, Translation
from trackstream.stream.drag.optimize import (
    DragConfig,
    build_targets,
    default_layers,
    optimise_latent,
    reference_features,
    segment_count,
)
from trackstream.stream.drag.points import drag_tracks
from trackstream.stream.engine import StreamingGenerator

H = W = 64


@pytest.fixture(scope="module")
def engine(tiny_network):
    net = tiny_network(0).eval().requires_grad_(False)
    codec = build_codec("tiny-ae", width=16, patch=4).eval()  # 4 px per latent cell, 8 px per token
    return StreamingGenerator(net, codec, config=StreamConfig(steps=3, shift=3.0))


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, H, W, generator=g) * 2 - 1, torch.randn(1, 5, 24, generator=g), torch.tensor([5])


def _box(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _instruction(mode="animate", dx=16.0):
    mask = _box(16, 24, 32, 40)
    steps = 1 if mode == "edit" else 3
    pts = np.array([[24.0 + dx * k / steps, 32.0] for k in range(steps + 1)])
    editable = _box(8, 16, 56, 48)
    return DragInstruction(
        mode=mode, trajectories=[Translation(points=pts)], object_masks=[mask], editable=editable, num_chunks=1
    )


def _after_first_chunk(engine):
    """The stream's state after chunk 0 (the image) and chunk 1's empty-motion conditioning."""
    image, text, lens = _inputs()
    _, state = engine.step(engine.start(image, text, lens))
    return state, engine.condition(state)


def test_default_layers_are_the_middle_blocks():
    assert default_layers(30) == (12, 13, 14, 15)  # DragStream's record_feature_block_indexes
    assert default_layers(2) == (0, 1)


def test_targets_of_a_translated_and_a_rotated_box_land_where_they_should():
    token, h, w = 8, H // 8, W // 8
    ref = torch.arange(h * w, dtype=torch.float32).view(1, h, w)  # each token's feature = its index
    mask = _box(16, 24, 32, 40)  # tokens x 2..3, y 3..4
    move = DragInstruction(
        mode="edit",
        trajectories=[Translation(points=np.array([[24.0, 32.0], [40.0, 32.0]]))],
        object_masks=[mask],
        editable=mask,
    )
    (seg_half,), (seg_full,) = build_targets({None: ref}, move, [(2, 1)], token=token, patch=(2, 2), segments=2)
    want = torch.zeros(h, w, dtype=torch.bool)
    want[3:5, 4:6] = True  # 16 px = 2 tokens to the right
    assert torch.equal(seg_full.mask, want)
    assert torch.equal(seg_full.features[None][0, 3:5, 4:6], ref[0, 3:5, 2:4])  # the source tokens' features
    half = torch.zeros(h, w, dtype=torch.bool)
    half[3:5, 3:5] = True  # coarse-to-fine: the first of two segments moves one token
    assert torch.equal(seg_half.mask, half)
    assert seg_full.gauss.shape == (2 * h, 2 * w) and seg_full.free[6:10, 8:12].all()  # latent grid = 2x tokens

    bar = _box(16, 24, 48, 32)  # 4 x 1 tokens: x 2..5, y 3; turned about token (3, 3)'s centre
    turn = DragInstruction(
        mode="edit",
        object_masks=[bar],
        editable=bar,
        trajectories=[
            Rotation2D(center=np.array([27.5, 27.5]), start=np.array([35.5, 27.5]), arms=np.array([[27.5, 35.5]]))
        ],
    )
    ((target,),) = build_targets({None: ref}, turn, [(2, 1)], token=token, patch=(2, 2), segments=1)
    ys, xs = torch.nonzero(target.mask, as_tuple=True)
    assert set(xs.tolist()) == {3} and sorted(ys.tolist()) == [2, 3, 4, 5]  # a vertical bar after 90 degrees
    # clockwise on screen: the bar's right end (token x=5) goes down
    right_end = ref[0, 3, 5]
    assert target.features[None][0, ys.max(), xs[0]] == right_end


def test_segments_follow_the_motion_and_the_angle():
    cfg = DragConfig()
    assert segment_count(_instruction("edit", dx=16.0), 8, cfg) == 2  # 16 px / 8-px tokens
    assert segment_count(_instruction("edit", dx=4.0), 8, cfg) == 1
    turn = DragInstruction(
        mode="edit",
        object_masks=[_box(16, 24, 48, 32)],
        editable=_box(0, 0, 64, 64),
        trajectories=[
            Rotation2D(center=np.array([32.0, 28.0]), start=np.array([40.0, 28.0]), arms=np.array([[32.0, 36.0]]))
        ],
    )
    assert segment_count(turn, 8, cfg) == 90 // 8


def test_the_optimisation_lowers_its_loss(engine):
    net = engine.network
    state, y = _after_first_chunk(engine)
    layers = default_layers(net.dit.num_layers)
    sig = engine.sigmas[1]
    g = torch.Generator().manual_seed(3)
    z = add_noise(
        torch.randn(1, 16, 3, 16, 16, generator=g), torch.randn(1, 16, 3, 16, 16, generator=g), sig.reshape(1)
    )
    ref = reference_features(net, state.cache, z, sig, y, layers, (None,))
    targets = build_targets(ref, _instruction("edit"), [(2, 1)], token=8, patch=(2, 2), segments=1)
    cfg = DragConfig(iterations=12, lr=0.05, adsr=False, sfso_spatial=False)
    cache_before = [t.clone() for c in state.cache.chunks for kv in c.layers for t in kv]
    with torch.enable_grad():
        z_new, log = optimise_latent(net, state.cache, z, sig, y, targets, cfg, layers=layers, single_target=True)
    first, last = log.losses[0][0], min(loss for loss, _ in log.losses[-3:])
    assert last < 0.8 * first, log.losses
    assert not torch.equal(z_new, z) and log.forwards == 12  # the first iteration's pass gives the kept x0
    assert all(
        torch.equal(a, b) for a, b in zip(cache_before, (t for c in state.cache.chunks for kv in c.layers for t in kv))
    )


def test_a_drag_with_nothing_to_do_is_the_engines_chunk(engine):
    image, text, lens = _inputs()
    editor = DragEditor(engine, DragConfig(iterations=0, adsr=False, pin=False))
    editor.start(image, text, lens, seed=5)
    dragged = editor.drag(_instruction("animate"), method="latent").chunks[0]
    state = engine.start(image, text, lens, seed=5)
    _, state = engine.step(state)
    plain, _ = engine.step(state)
    assert torch.equal(dragged.frames, plain.frames) and torch.equal(dragged.latents, plain.latents)


@pytest.mark.slow
def test_an_abandoned_edit_leaves_the_stream_bit_identical(engine):
    image, text, lens = _inputs()
    editor = DragEditor(engine, DragConfig(iterations=2))
    editor.start(image, text, lens, seed=5)
    editor.step()
    kept = editor.state
    snapshot = [t.clone() for c in kept.cache.chunks for kv in c.layers for t in kv]
    result = editor.drag(_instruction("edit"), method="both")
    assert [c.index for c in result.chunks] == [1] and result.reference_chunk == 0
    assert all(
        torch.equal(a, b) for a, b in zip(snapshot, (t for c in kept.cache.chunks for kv in c.layers for t in kv))
    )
    # abandon: continue from the kept state exactly as if the edit never happened
    out_kept, _ = engine.step(kept)
    state = engine.start(image, text, lens, seed=5)
    for _ in range(2):
        _, state = engine.step(state)
    out_plain, _ = engine.step(state)
    assert torch.equal(out_kept.frames, out_plain.frames)


def test_drag_tracks_pin_the_outside_and_move_the_object():
    instr = _instruction("animate", dx=12.0)
    tracks, vis = drag_tracks(instr, token=8, height=H, width=W, num_frames=13, static_points=20)
    pins = tracks[:, :20]
    assert (pins == pins[:1]).all() and not instr.editable[pins[0, :, 1].astype(int), pins[0, :, 0].astype(int)].any()
    obj = tracks[:, 20:]
    assert obj.shape[1] == 4  # the 2 x 2 tokens of the box
    np.testing.assert_allclose(obj[-1] - obj[0], np.tile([12.0, 0.0], (4, 1)))  # the whole move by the last frame
    np.testing.assert_allclose(obj[4] - obj[0], np.tile([4.0, 0.0], (4, 1)))  # latent offset 1 = step 1 of 3
    assert vis.all()


def test_track_methods_keep_the_streams_ids_and_need_a_track_head(engine):
    image, text, lens = _inputs()
    instr = _instruction("animate")
    pins, pv = drag_tracks(instr, token=8, height=H, width=W, num_frames=1, objects=False)
    ids = sample_track_ids(1, pins.shape[1], generator=torch.Generator().manual_seed(0))
    editor = DragEditor(engine, DragConfig(iterations=1))
    editor.start(
        image, text, lens, track_ids=ids, tracks=torch.from_numpy(pins)[None], visibility=torch.from_numpy(pv)[None]
    )
    editor.drag(instr, method="tracks")
    now = editor.state.cond.track_ids
    assert torch.equal(now[:, : ids.shape[1]], ids) and now.shape[1] == ids.shape[1] + 4
    assert len(set(now[0].tolist())) == now.shape[1]
    kept = editor.state
    with pytest.raises(ValueError, match="method="):
        editor.drag(_instruction("edit"), method="teleport")
    assert editor.state is kept  # a refused drag loses nothing


def test_a_features_only_pass_records_the_same_features_and_latent_constancy_optimises(engine):
    from trackstream.models.causal import FeatureRecorder, stream_step

    net = engine.network
    state, y = _after_first_chunk(engine)
    z = torch.randn(1, 16, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    t = torch.full((1,), 800.0)
    full, short = FeatureRecorder([0]), FeatureRecorder([0])
    stream_step(net.dit, state.cache, z, t, y=y, recorder=full)
    out = stream_step(net.dit, state.cache, z, t, y=y, recorder=short, until=0)
    assert out.pred is None and out.kv is None and torch.equal(full.features[0], short.features[0])

    sig = engine.sigmas[1]
    layers = default_layers(net.dit.num_layers)
    ref = reference_features(net, state.cache, z, sig, y, layers, (None, 0.4))
    targets = build_targets(ref, _instruction("edit"), [(2, 1)], token=8, patch=(2, 2), segments=1)
    cfg = DragConfig(iterations=12, lr=0.05, adsr=False, sfso_spatial=False, keep="latent")
    with torch.enable_grad():
        _, log = optimise_latent(net, state.cache, z, sig, y, targets, cfg, layers=layers, single_target=True)
    assert min(loss for loss, _ in log.losses[-3:]) < 0.8 * log.losses[0][0]
    assert set(log.cutoffs) <= {None, 0.4}


@pytest.mark.slow
def test_reference_sources_resolve_and_run(engine):
    image, text, lens = _inputs()
    seen = {}
    for source in ("previous", "self", "auto"):
        editor = DragEditor(engine, DragConfig(iterations=1, reference=source))
        editor.start(image, text, lens, seed=5)
        first = editor.drag(_instruction("animate"), method="latent")  # right after the first frame
        later = editor.drag(_instruction("animate"), method="latent")  # after a generated chunk
        seen[source] = (first.reference, later.reference)
        assert first.logs[0].losses and later.logs[0].losses
    assert seen == {"previous": ("previous", "previous"), "self": ("self", "self"), "auto": ("self", "previous")}
    with pytest.raises(ValueError, match="reference"):
        DragConfig(reference="elsewhere")


def test_retrack_tags_new_points_without_changing_what_was_shown(engine):
    image, text, lens = _inputs()
    ids = sample_track_ids(1, 4, generator=torch.Generator().manual_seed(0))
    editor = DragEditor(engine, DragConfig(iterations=0))
    editor.start(image, text, lens, track_ids=ids, seed=3)
    shown = editor.step()
    before = editor.state
    lo, hi = engine.pixel_range(1)
    tracks = torch.full((1, hi - lo, 4, 2), 20.0)
    vis = torch.zeros(1, hi - lo, 4, dtype=torch.bool)
    vis[0, -1, 2] = True  # point 2 appears on the chunk's last frame
    editor.retrack(tracks, vis)
    assert editor.history[-1].latents is shown.latents and editor.state.chunk == before.chunk
    assert not torch.equal(editor.state.cache.chunks[-1].layers[0][0], before.cache.chunks[-1].layers[0][0])
    # other IDs for the next chunks reach the recorded states a drag resumes from
    other = sample_track_ids(1, 4, generator=torch.Generator().manual_seed(1))
    editor.use_track_ids(other)
    assert all(torch.equal(r.after.cond.track_ids, other) for r in editor.history)
    assert editor.history[-1].after is editor.state
