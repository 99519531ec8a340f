"""The drag benchmark's placements (``--placements``): where a drag with tracks lays the object's points. The
lattice is the token centres inside the mask; shifted moves them half a token in x and y, keeping those inside
the mask; random lays as many uniform sub-pixel points, fixed per scene; sparse 3 clicks. Each placement's
points follow the intended path as the lattice's do (``drag_tracks``' own object tracks), a run gives each
(row, placement) its own row (the lattice keeping the bare name), and a bad name is a one-line refusal."""

import math

import numpy as np
import pytest
import torch

from trackstream.eval import drag_bench
from trackstream.eval.drag_bench import object_tracks, parse_placements, row_name, run_benchmark
from trackstream.eval.drag_scenes import PLACEMENTS, make_scenes, placement_points, scene_points
from trackstream.eval.drag_table import FLOOR_ROWS, table
from trackstream.stream.drag.adsr import mask_tokens
from trackstream.stream.drag.points import drag_tracks


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(8, seed=3)


def _in_mask(mask: np.ndarray, pts: np.ndarray) -> bool:
    """Every pixel each point touches (floor and ceiling of x and y) is in the mask."""
    return all(mask[int(fy(y)), int(fx(x))] for x, y in pts for fx in (np.floor, np.ceil) for fy in (np.floor, np.ceil))


def _on_centres(pts: np.ndarray, token: int) -> np.ndarray:
    return np.all(np.isclose((pts - (token - 1) / 2) % token, 0), axis=1)


@pytest.mark.slow
@pytest.mark.parametrize("token", [4, 8])
def test_the_placements_lay_the_points_as_specified(scenes, token):
    for scene in scenes:
        mask = scene.object_mask
        lattice = scene_points(scene, "lattice", token)
        assert np.array_equal(lattice, mask_tokens(mask, token)) and _on_centres(lattice, token).all()
        shifted = scene_points(scene, "shifted", token)
        moved = lattice + token / 2
        assert len(shifted) <= len(lattice) and all(any(np.allclose(p, q) for q in moved) for p in shifted)
        dropped = [q for q in moved if not any(np.allclose(q, p) for p in shifted)]
        assert _in_mask(mask, shifted) and not any(_in_mask(mask, [q]) for q in dropped)
        rand = scene_points(scene, "random", token)
        assert len(rand) == len(lattice) and not _on_centres(rand, token).any()
        assert _in_mask(mask, np.rint(rand))  # inside the mask: each point lies in a mask pixel
        assert np.array_equal(rand, scene_points(scene, "random", token))  # fixed per scene
        sparse = scene_points(scene, "sparse", token)
        assert sparse.shape == (3, 2) and _in_mask(mask, np.rint(sparse))
    assert token == 8 or sum(len(scene_points(s, "shifted", token)) for s in scenes) > 0
    a, b = (scene_points(s, "random", token) for s in scenes[:2])
    assert not (a.shape == b.shape and np.allclose(a, b))  # another scene, other points
    with pytest.raises(ValueError, match="choose one of lattice, shifted, random, sparse"):
        placement_points(scenes[0].object_mask, "grid", token)


def test_a_placement_follows_the_intended_path_as_the_lattice_does(scenes):
    for scene in scenes:
        instr = scene.instruction
        kw = dict(height=64, width=64, num_frames=13)
        both, vis = drag_tracks(instr, token=4, objects=True, **kw)
        static, svis = drag_tracks(instr, token=4, objects=False, **kw)
        moved, mvis = object_tracks(instr, mask_tokens(scene.object_mask, 4), **kw)
        assert np.array_equal(both, np.concatenate([static, moved], 1))
        assert np.array_equal(vis, np.concatenate([svis, mvis], 1))
        sparse = scene_points(scene, "sparse", 4)
        tracks, _ = object_tracks(instr, sparse, **kw)
        assert tracks.shape == (13, 3, 2) and np.allclose(tracks[0], sparse, atol=1e-4)  # frame 0: the clicks
    assert object_tracks(instr, np.zeros((0, 2)), **kw)[0].shape == (13, 0, 2)


def test_a_bad_placement_is_one_line_naming_the_option_and_the_choices(tmp_path, capsys):
    assert parse_placements("lattice, random,lattice") == ["lattice", "random"]
    assert (row_name("native tracks", "lattice"), row_name("native tracks", "sparse")) == (
        "native tracks",
        "native tracks [sparse]",
    )
    for bad in ("lattice,diagonal", ","):
        with pytest.raises(SystemExit) as exit_:
            drag_bench.main(["--placements", bad, "--out", str(tmp_path / "o")])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "--placements" in err and ", ".join(PLACEMENTS) in err, err
    assert not (tmp_path / "o").exists()  # refused before anything ran


@pytest.mark.slow
def test_two_placements_give_a_row_each(tmp_path, tiny_network, monkeypatch):
    from trackstream.data.trackers import build_tracker
    from trackstream.models.codecs import build_codec
    from trackstream.models.streaming import StreamConfig
    from trackstream.stream.engine import StreamingGenerator

    net = tiny_network(0).eval().requires_grad_(False)
    engine = StreamingGenerator(net, build_codec("tiny-ae", width=16, patch=4).eval(), config=StreamConfig(steps=2))
    scene = next(s for s in make_scenes(8, seed=3) if s.name == "rotate2d-edit-06")
    laid = []
    real = drag_bench.PlacedEditor._tracks

    def spy(self, instr, ref, *, objects):
        tracks, vis = real(self, instr, ref, objects=objects)
        laid.append(tracks)
        return tracks, vis

    monkeypatch.setattr(drag_bench.PlacedEditor, "_tracks", spy)

    def encode(texts):
        return torch.randn(1, 5, 24, generator=torch.Generator().manual_seed(0)), torch.tensor([5])

    res = run_benchmark(
        engine,
        encode,
        [scene],
        ["native tracks"],
        tracker=build_tracker("lk"),
        placements=("lattice", "sparse"),
        progress=False,
    )
    rows = res["rows"]
    assert list(rows) == ["no drag (I=0)", "native tracks", "native tracks [sparse]", *FLOOR_ROWS]
    assert res["placements"] == ["lattice", "sparse"]
    assert [rows[r]["placement"] for r in ("no drag (I=0)", "native tracks", "native tracks [sparse]")] == [
        None,
        "lattice",
        "sparse",
    ]
    assert (
        rows["native tracks"]["points"] == len(mask_tokens(scene.object_mask, 8))
        and rows["native tracks [sparse]"]["points"] == 3
    )
    for r in ("native tracks", "native tracks [sparse]"):
        assert all(math.isfinite(rows[r][k]) for k in ("objmc", "point_error", "object_error", "dai", "rf"))
        assert rows[r]["row"] == "native tracks"
    # the drag's tracks end in the placement's points: the lattice's token centres, then the 3 clicks
    lattice = mask_tokens(scene.object_mask, 8)
    assert len(laid) == 2 and laid[0].shape[1] - len(lattice) == laid[1].shape[1] - 3  # the same pins
    assert np.allclose(laid[0][0, -len(lattice) :], lattice)
    assert np.allclose(laid[1][0, -3:], scene_points(scene, "sparse", 8), atol=1e-4)
    md = table(res)
    assert "| native tracks | sparse |" in md and "| native tracks | lattice |" in md and "| no drag (I=0) | — |" in md
    assert len({line.count("|") for line in md.split("\n\n")[0].splitlines()}) == 1
