"""The four switches where our DragStream defaults and the public reference code's differ, and the two
named settings: the re-created optimiser starts every iteration afresh, feature upsampling builds the
targets on the latent grid and changes the feature loss's scale, x0's ADSR without the image chunk
leaves it out of the pool, the presets resolve to the documented values and bad values name the field."""

import numpy as np
import pytest
import torch

from trackstream.diffusion.schedule import add_noise
from trackstream.models.codecs import build_codec
from trackstream.models.streaming import StreamConfig
from trackstream.stream.drag import editor as editor_module
from trackstream.stream.drag.editor import DragEditor
from trackstream.stream.drag.instructions import DragInstruction, Translation
from trackstream.stream.drag.optimize import (
    SETTINGS,
    DragConfig,
    build_targets,
    default_layers,
    optimise_latent,
    reference_features,
)
from trackstream.stream.engine import StreamingGenerator

H = W = 64


@pytest.fixture(scope="module")
def engine(tiny_network):
    net = tiny_network(0).eval().requires_grad_(False)
    codec = build_codec("tiny-ae", width=16, patch=4).eval()  # 4 px per latent cell, 8 px per token (patch 2)
    return StreamingGenerator(net, codec, config=StreamConfig(steps=3, shift=3.0))


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, H, W, generator=g) * 2 - 1, torch.randn(1, 5, 24, generator=g), torch.tensor([5])


def _box(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _instruction(mode="edit", dx=16.0, num_chunks=1):
    steps = 1 if mode == "edit" else 3 * num_chunks
    pts = np.array([[24.0 + dx * k / steps, 32.0] for k in range(steps + 1)])
    return DragInstruction(
        mode=mode,
        trajectories=[Translation(points=pts)],
        object_masks=[_box(16, 24, 32, 40)],
        editable=_box(8, 16, 56, 48),
        num_chunks=num_chunks,
    )


def _chunk_one(engine):
    """Chunk 1's input at step T' = 1, its state and conditioning, and the reference features."""
    image, text, lens = _inputs()
    _, state = engine.step(engine.start(image, text, lens))
    y = engine.condition(state)
    sig = engine.sigmas[1]
    g = torch.Generator().manual_seed(3)
    z = add_noise(
        torch.randn(1, 16, 3, 16, 16, generator=g), torch.randn(1, 16, 3, 16, 16, generator=g), sig.reshape(1)
    )
    layers = default_layers(engine.network.dit.num_layers)
    ref = reference_features(engine.network, state.cache, z, sig, y, layers, (None,))
    return state, y, sig, z, layers, ref


# -- the named settings ------------------------------------------------------------------------------


def test_presets_resolve_to_the_documented_values():
    ours, reference = DragConfig.preset("ours"), DragConfig.preset("reference")
    assert ours == DragConfig()  # today's defaults

    def four(c):
        return c.reset_optimizer, c.iterations, c.upsample_features, c.adsr_pool_image

    assert four(ours) == (False, 4, False, True) and four(reference) == (True, 5, True, False)
    # the presets differ in those four fields only
    differ = {k for k in DragConfig.__dataclass_fields__ if getattr(ours, k) != getattr(reference, k)}
    assert differ == set(SETTINGS["reference"]) == set(SETTINGS["ours"])
    assert DragConfig.preset("reference", iterations=0, seed=3).iterations == 0  # changes go on top
    with pytest.raises(ValueError, match="'paper'"):
        DragConfig.preset("paper")


def test_the_benchmark_option_picks_the_preset_and_its_help_documents_it(capsys):
    from trackstream.eval.drag_bench import _config, main

    assert _config([], preset="reference", seed=0) == DragConfig.preset("reference")
    cfg = _config(["upsample_features=false"], preset="reference", iterations=2, seed=0)  # --set last
    assert (cfg.iterations, cfg.reset_optimizer, cfg.upsample_features, cfg.adsr_pool_image) == (2, True, False, False)
    assert _config([], seed=0) == DragConfig()
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--settings {ours,reference}" in text and "I=5" in text
    with pytest.raises(SystemExit):  # argparse refuses an unknown settings name
        main(["--settings", "paper", "--out", "unused"])


@pytest.mark.parametrize(
    "field, value",
    [
        ("reset_optimizer", "yes"),
        ("upsample_features", 1),
        ("adsr_pool_image", None),
        ("iterations", 4.5),
        ("iterations", True),
        ("iterations", -1),
        ("adsr", "false"),
        ("neighbours", -1),
    ],
)
def test_bad_values_give_a_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"DragConfig.{field}"):
        DragConfig(**{field: value})


# -- the switches ------------------------------------------------------------------------------------


class _CountingAdamW(torch.optim.AdamW):
    made = 0
    steps: list = []

    def __init__(self, *args, **kwargs):
        type(self).made += 1
        super().__init__(*args, **kwargs)

    def step(self, closure=None):
        out = super().step(closure)
        (state,) = self.state.values()
        type(self).steps.append(int(state["step"]))
        return out


@pytest.mark.parametrize("reset", [False, True])
def test_reset_recreates_the_optimiser_state_every_iteration(engine, monkeypatch, reset):
    state, y, sig, z, layers, ref = _chunk_one(engine)
    targets = build_targets(ref, _instruction(), [(2, 1)], token=8, patch=(2, 2), segments=2)
    monkeypatch.setattr(torch.optim, "AdamW", _CountingAdamW)
    monkeypatch.setattr(_CountingAdamW, "made", 0)
    monkeypatch.setattr(_CountingAdamW, "steps", [])
    cfg = DragConfig(iterations=3, reset_optimizer=reset, adsr=False)
    with torch.enable_grad():
        out, log = optimise_latent(
            engine.network, state.cache, z, sig, y, targets, cfg, layers=layers, single_target=True
        )
    assert log.forwards == 6  # 2 segments x 3 iterations
    if reset:  # as the reference: one before the segments, a new one after every iteration; each step is a first
        assert _CountingAdamW.made == 1 + 6 and _CountingAdamW.steps == [1] * 6
    else:  # one optimiser whose moments run through every segment
        assert _CountingAdamW.made == 1 and _CountingAdamW.steps == [1, 2, 3, 4, 5, 6]
    assert not torch.equal(out, z)


def test_reset_makes_every_update_a_signed_step_of_lr(engine):
    state, y, sig, z, layers, ref = _chunk_one(engine)
    targets = build_targets(ref, _instruction(), [(2, 1)], token=8, patch=(2, 2), segments=1)
    z32 = z.float()
    for reset in (False, True):
        cfg = DragConfig(iterations=2, reset_optimizer=reset, adsr=False, sfso_spatial=False, lr=0.02)
        with torch.enable_grad():
            out, _ = optimise_latent(
                engine.network, state.cache, z, sig, y, targets, cfg, layers=layers, single_target=True
            )
        step = (out - z32 * (1 - 0.02 * 0.01) ** 2).abs() / 0.02  # in units of lr, the decoupled decay taken out
        on_grid = float(((step - step.round()).abs() < 0.02).float().mean())
        if reset:  # two first Adam steps: 0, lr or 2 lr per element (all but the tiniest gradients)
            assert on_grid > 0.9, on_grid
        else:  # the second step has a real second moment: sizes spread out
            assert on_grid < 0.6, on_grid


def test_upsampling_builds_targets_on_the_latent_grid_and_changes_the_feature_loss(engine):
    state, y, sig, z, layers, ref = _chunk_one(engine)
    instr = _instruction()
    (plain,), (up,) = (
        build_targets(ref, instr, [(2, 1)], token=8, patch=(2, 2), segments=1, upsample=u)[0] for u in (False, True)
    )
    C = ref[None].shape[0]
    assert plain.mask.shape == (8, 8) and plain.features[None].shape == (C, 8, 8)  # the token grid
    assert up.mask.shape == (16, 16) and up.features[None].shape == (C, 16, 16)  # the latent grid (x patch 2)
    assert int(up.mask.sum()) == 4 * int(plain.mask.sum())  # the same target, 2 x 2 cells per token
    assert torch.equal(up.mask, plain.mask.repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert up.free.shape == plain.free.shape == (16, 16)
    losses = {}
    for u, target in ((False, plain), (True, up)):
        cfg = DragConfig(iterations=1, upsample_features=u, adsr=False)
        with torch.enable_grad():
            _, log = optimise_latent(
                engine.network, state.cache, z, sig, y, [[target]], cfg, layers=layers, single_target=True
            )
        losses[u] = log.losses[0]
    # the same z, the same kept x0 (the keep term is 0 on the first pass): only the feature term differs
    assert losses[False][1] == losses[True][1] == 0.0
    assert losses[True][0] > 0 and losses[False][0] > 0
    assert abs(losses[True][0] / losses[False][0] - 1) > 0.05, losses


def test_a_drag_with_upsampled_features_runs_through_the_editor(engine):
    image, text, lens = _inputs()
    editor = DragEditor(engine, DragConfig.preset("reference", iterations=1))
    editor.start(image, text, lens, seed=5)
    editor.step()
    result = editor.drag(_instruction(), method="latent")
    assert result.logs[0].losses and all(np.isfinite(f) for f, _ in result.logs[0].losses)


@pytest.mark.slow
@pytest.mark.parametrize("pool_image", [True, False])
def test_rectification_without_the_image_chunk_leaves_it_out_of_the_pool(engine, monkeypatch, pool_image):
    pools = []  # per rectify_x0 call: the neighbours' latent frame counts (the image chunk has 1)

    def spy(x0, neighbours):
        pools.append(tuple(n.shape[2] for n in neighbours))
        return x0

    monkeypatch.setattr(editor_module, "rectify_x0", spy)
    image, text, lens = _inputs()
    editor = DragEditor(engine, DragConfig(iterations=1, adsr_pool_image=pool_image, neighbours=2, pin=False))
    editor.start(image, text, lens, seed=5)
    editor.drag(_instruction("animate", num_chunks=2), method="latent")  # chunks 1 and 2, right after the image
    steps = len(engine.sigmas) - 1  # x0 is rectified at every sampler step of a steered chunk
    if pool_image:
        assert pools == [(1,)] * steps + [(1, 3)] * steps
    else:  # chunk 1 has no neighbour but the image: not rectified at all (the reference's first blocks)
        assert pools == [(3,)] * steps
    pools.clear()
    editor.drag(_instruction("edit"), method="latent")  # re-generates chunk 2: the window is chunks 0 and 1
    assert pools == ([(1, 3)] if pool_image else [(3,)]) * steps
