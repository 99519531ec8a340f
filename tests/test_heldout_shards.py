"""Training-time evaluation on held-out shards (``data.eval_shards``): with ``data.source=shards`` the teacher's
evaluation and the students' periodic samples read the first ``data.eval_samples`` samples of the held-out
shards in order, decoded as the training loader decodes shard samples; without ``data.eval_shards`` (or with
clips too short or too few for the evaluation) the stage refuses to start, naming the fix."""

import json

import numpy as np
import pytest
from hydra_helpers import typed

from trackstream.data.clips import DataConfig, check_heldout, heldout_clips, make_world
from trackstream.data.shards import write_synthetic_shards

WORLD = make_world(DataConfig(height=64, width=64, num_frames=17))
HELDOUT_SEED = 500  # held-out clips render seeds 500, 501, 502; training clips 0..5
SHARDS = ["data.source=shards", "data.pool_size=null"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("heldout_shards")
    write_synthetic_shards(WORLD, str(root / "train"), num_samples=6, samples_per_shard=3)
    write_synthetic_shards(WORLD, str(root / "heldout"), num_samples=3, samples_per_shard=2, seed=HELDOUT_SEED)
    return {"train": str(root / "train"), "heldout": str(root / "heldout")}


def _data(folders, **kw) -> DataConfig:
    return DataConfig(**{"source": "shards", "pool_size": None, "shards": folders["train"], "eval_samples": 2, **kw})


@pytest.mark.slow
def test_heldout_clips_are_the_first_eval_shard_samples_in_order(folders):
    from trackstream.eval.benchmarks import _shards

    cfg = _data(folders, eval_shards=folders["heldout"], eval_samples=3, num_frames=13)
    pool = heldout_clips(cfg)
    harness = _shards(folders["heldout"], 3)  # the standalone evaluation's reader
    assert pool.world is None and len(pool) == 3
    for i, (clip, sample) in enumerate(zip(pool.clips, harness)):
        source = WORLD.generate(HELDOUT_SEED + i)
        assert clip["caption"] == source["caption"] == sample.caption
        assert clip["frames"].dtype == np.uint8 and clip["frames"].shape == (13, 64, 64, 3)
        assert np.array_equal(clip["frames"], sample.frames[:13])
        assert np.abs(clip["frames"].astype(int) - source["frames"][:13].astype(int)).mean() < 8  # H.264
        assert np.array_equal(clip["tracks"], source["tracks"][:13]) and clip["tracks"].dtype == np.float32
        assert np.array_equal(clip["visibility"], source["visibility"][:13])
        assert clip["meta"]["seed"] == HELDOUT_SEED + i and clip["meta"]["key"] == sample.id
    # a brace pattern over the same shards reads the same clips; a subset is the first ones
    pattern = folders["heldout"] + "/shard-{000000..000001}.tar"
    brace = heldout_clips(_data(folders, eval_shards=pattern, eval_samples=2, num_frames=13))
    assert [c["caption"] for c in brace.clips] == [c["caption"] for c in pool.head(2).clips]


def test_shards_without_eval_shards_refuse_with_the_fix_named(folders):
    cfg = _data(folders)
    with pytest.raises(ValueError, match=r"data.eval_shards=null.*trackstream.data.prepare.*eval.enabled=false"):
        heldout_clips(cfg)
    with pytest.raises(ValueError, match="holds 3 samples but the evaluation reads 4"):
        check_heldout(_data(folders, eval_shards=folders["heldout"], eval_samples=4))
    with pytest.raises(ValueError, match="data.eval_shards is read with data.source=shards only"):
        DataConfig(eval_shards=folders["heldout"])
    check_heldout(DataConfig())  # the synthetic world renders its own held-out clips


def test_a_heldout_clip_shorter_than_the_evaluation_is_an_error(folders):
    cfg = _data(folders, eval_shards=folders["heldout"], eval_samples=2, num_frames=21)  # the shards hold 17
    with pytest.raises(ValueError, match=r"shard-000000.tar has 17 frames .* asks for 21: lower eval.num_frames"):
        heldout_clips(cfg)
    with pytest.raises(ValueError, match="videos are 64 high x 64 wide but data.height=48 data.width=64"):
        heldout_clips(_data(folders, eval_shards=folders["heldout"], height=48))


@pytest.mark.slow  # trains the teacher stage (codec fit, 3 steps, two evaluations)
def test_teacher_evaluates_on_the_heldout_shards(folders, tmp_path, monkeypatch):
    import trackstream.train.teacher.build as teacher_stage
    from trackstream.eval.benchmarks import _shards
    from trackstream.eval.metrics import frozen_epe, video_psnr
    from trackstream.train.app import run_stage
    from trackstream.trainer.dist import init_runtime, seed_everything

    seen = []

    def recording(network, *, clips, **kw):
        seen.append(clips.clips)
        return evaluate_motion(network, clips=clips, **kw)

    evaluate_motion = teacher_stage.evaluate_motion
    monkeypatch.setattr(teacher_stage, "evaluate_motion", recording)
    cfg = typed(
        tmp_path,
        "experiment=tiny_teacher",
        "debug=tiny",
        *SHARDS,
        f"data.shards={folders['train']}",
        f"data.eval_shards={folders['heldout']}",
        "data.eval_samples=2",
        "eval.num_tracks=null",
        "eval.periodic_clips=1",
        "trainer.sample_every=2",
        "trainer.max_steps=3",
        "codec.fit.steps=2",
    )
    seed_everything(cfg.trainer.seed)
    run_dir = tmp_path / "teacher"
    assert run_stage(cfg, init_runtime("single"), run_dir)["status"] == "done"
    truth = _shards(folders["heldout"], 2)
    assert [len(clips) for clips in seen] == [1, 2]  # periodic (eval.periodic_clips) at step 2, final
    for clip, s in zip(seen[-1], truth):
        assert clip["caption"] == s.caption and np.array_equal(clip["frames"], s.frames)
    assert json.loads((run_dir / "eval.jsonl").read_text())["num_samples"] == 1
    figures = json.loads((run_dir / "eval.json").read_text())
    assert figures["num_samples"] == 2
    # figures of the shard clips: the frozen first frame's EPE (tracks only) and PSNR (frames only)
    for i, s in enumerate(truth):
        keep = s.visibility[0]
        assert figures["per_sample"]["frozen_video"][i] == pytest.approx(
            frozen_epe(s.tracks[:, keep], s.visibility[:, keep])[0]
        )
        still = np.broadcast_to(s.frames[:1], s.frames.shape)
        assert figures["psnr_per_sample"]["frozen_video"][i] == pytest.approx(video_psnr(still, s.frames))


@pytest.mark.slow
def test_teacher_without_eval_shards_stops_before_any_work(folders, tmp_path):
    from trackstream.train.app import run_stage
    from trackstream.trainer.dist import init_runtime

    cfg = typed(tmp_path, "experiment=tiny_teacher", "debug=tiny", *SHARDS, f"data.shards={folders['train']}")
    with pytest.raises(ValueError, match=r"data.eval_shards=null.* or set eval.enabled=false$"):
        run_stage(cfg, init_runtime("single"), tmp_path / "run")
    assert not (tmp_path / "run" / "codec").exists()  # refused before the codec fit


@pytest.mark.slow
def test_student_sampling_reads_the_heldout_shards(folders, tmp_path):
    from trackstream.train.periodic import sampling_clips
    from trackstream.trainer.dist import init_runtime

    student = ["experiment=tiny_dmd", "debug=tiny", "stage.teacher=t", "stage.pairs=p", *SHARDS]
    # the student trains on 25 frames (2 chunks of 3 latents after the first); the held-out clips hold 17
    student += [f"data.shards={folders['train']}", "trainer.sample_every=2", "eval.enabled=true", "eval.num_frames=17"]
    runtime = init_runtime("single")

    def sampling(cfg):
        return sampling_clips(
            cfg.eval, cfg.data, runtime, sample_every=cfg.trainer.sample_every, strategy=cfg.parallel.strategy
        )

    # no held-out shards: the student trains without samples and says so (samples follow the held-out data)
    assert sampling(typed(tmp_path, *student)) is None
    with pytest.raises(ValueError, match=r"holds 3 samples but the evaluation reads 9"):  # too few held-out clips
        sampling(
            typed(
                tmp_path,
                *student,
                f"data.eval_shards={folders['heldout']}",
                "data.eval_samples=9",
                "eval.periodic_clips=9",
            )
        )
    cfg = typed(tmp_path, *student, f"data.eval_shards={folders['heldout']}", "eval.periodic_clips=2")
    clips = sampling(cfg)
    assert [c["caption"] for c in clips] == [WORLD.generate(HELDOUT_SEED + i)["caption"] for i in range(2)]
    assert clips[0]["frames"].shape == (17, 64, 64, 3)
    assert sampling(typed(tmp_path, *student, "trainer.sample_every=0")) is None


def test_synthetic_benchmark_of_a_shards_run_stays_synthetic(folders):
    from trackstream.eval.benchmarks import BenchmarkConfig, load_benchmark

    data = _data(folders, eval_shards=folders["heldout"])
    (sample,) = load_benchmark(BenchmarkConfig(name="synthetic", num_samples=1), data_cfg=data)
    assert sample.id.startswith("synthetic-")


def test_make_runs_synthetic_protocols_refuse_a_shards_config(folders, tmp_path):
    """make run's evaluation and the DMD study render long clips from the synthetic world: given a shards
    config they refuse (naming the harness that reads shards) instead of mixing shard and synthetic clips."""
    from trackstream.eval.stream_eval import run_evaluation

    data = _data(folders, eval_shards=folders["heldout"])
    with pytest.raises(ValueError, match="of the synthetic world .*benchmark.name=shards"):
        run_evaluation(tmp_path, teacher="t", students={}, data=data, teacher_steps=2)
