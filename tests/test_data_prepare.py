"""Shard pipeline: bad inputs are skipped with reasons, resumption is exact, workers and the CLI agree."""

import hashlib
import io
import json
import os

import numpy as np
import pytest
import torch
import webdataset as wds

from trackstream.data.lk_tracker import LucasKanadeTracker
from trackstream.data.loader import ShardStream
from trackstream.data.prepare_shards import PrepareConfig, run_prepare
from trackstream.data.shards import list_shards
from trackstream.data.synthetic import SyntheticWorld
from trackstream.data.video_io import write_mp4

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = SyntheticWorld(height=54, width=96, num_frames=30, fps=24, grid_size=4)  # 16:9 sources
GOOD = [f"good{i}" for i in range(6)]
BROKEN = {  # file stem -> expected reason kind
    "corrupt": "decode_error",
    "truncated": "decode_error",
    "empty": "empty_file",
    "lowfps": "low_fps",
    "nocaption": "missing_caption",
    "square": "aspect_ratio",
    "short": "too_short",
    "nantracks": "nan_tracks",
}


def _caption(folder, stem, text="a test clip"):
    with open(os.path.join(folder, stem + ".txt"), "w") as f:
        f.write(text)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("videos"))
    for i, stem in enumerate(GOOD):
        clip = SOURCE.generate(i)
        write_mp4(os.path.join(folder, stem + ".mp4"), clip["frames"], fps=24)
        _caption(folder, stem, clip["caption"])
    with open(os.path.join(folder, "corrupt.mp4"), "wb") as f:
        f.write(np.random.default_rng(0).bytes(4000))
    data = open(os.path.join(folder, "good0.mp4"), "rb").read()
    with open(os.path.join(folder, "truncated.mp4"), "wb") as f:
        f.write(data[: len(data) // 2])
    open(os.path.join(folder, "empty.mp4"), "wb").close()
    write_mp4(os.path.join(folder, "lowfps.mp4"), SOURCE.generate(10)["frames"], fps=5)  # wrong fps
    write_mp4(os.path.join(folder, "nocaption.mp4"), SOURCE.generate(11)["frames"], fps=24)
    write_mp4(
        os.path.join(folder, "square.mp4"),
        SyntheticWorld(height=64, width=64, num_frames=30).generate(12)["frames"],
        fps=24,
    )
    write_mp4(os.path.join(folder, "short.mp4"), SOURCE.generate(13)["frames"][:6], fps=24)
    # A flat grey clip: the test tracker below returns NaN on textureless input.
    write_mp4(os.path.join(folder, "nantracks.mp4"), np.full((30, 54, 96, 3), 128, np.uint8), fps=24)
    for stem in BROKEN:
        if stem != "nocaption":
            _caption(folder, stem)
    return folder


class NaNOnFlatTracker(LucasKanadeTracker):
    """LK, except that it reports NaN coordinates for a textureless video (as a broken tracker might)."""

    def _track(self, frames, queries):
        tracks, vis = super()._track(frames, queries)
        if frames.std() < 2:
            tracks[:] = np.nan
        return tracks, vis


class InterruptingTracker(NaNOnFlatTracker):
    """Simulates `kill`: raises KeyboardInterrupt (not an Exception, so not absorbed) on call N."""

    def __init__(self, after: int):
        super().__init__()
        self.calls, self.after = 0, after

    def _track(self, frames, queries):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return super()._track(frames, queries)


def _cfg(videos, out, **kw):
    args = dict(
        input=videos,
        output=str(out),
        num_frames=9,
        height=32,
        width=56,
        grid_size=6,
        samples_per_shard=3,
        num_workers=0,
        progress=False,
        # the broken set's filters: captions required, 16:9-ish sources only (MotionStream's)
        missing_caption="skip",
        min_aspect=1.6,
        max_aspect=2.0,
    )
    args.update(kw)
    return PrepareConfig(**args)


def _digest(folder):
    """Hashes of everything a reader or a resumed run relies on."""
    names = sorted(n for n in os.listdir(folder) if n.endswith((".tar", ".json")) and n != "report.json")
    return {n: hashlib.sha256(open(os.path.join(folder, n), "rb").read()).hexdigest() for n in names}


@pytest.fixture(scope="module")
def reference(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    summary = run_prepare(_cfg(videos, out), tracker=NaNOnFlatTracker())
    return str(out), summary


@pytest.mark.slow
def test_good_files_become_samples_and_broken_ones_are_reported(reference):
    out, summary = reference
    assert summary["complete"] and summary["num_inputs"] == len(GOOD) + len(BROKEN)
    ids = set()
    for shard in list_shards(out):
        for raw in wds.tarfile_to_samples()([{"url": shard.url}]):
            meta = json.loads(raw["json"])
            ids.add(meta["id"])
            tracks, vis = np.load(io.BytesIO(raw["tracks.npy"])), np.load(io.BytesIO(raw["visibility.npy"]))
            assert tracks.shape == (9, 36, 2) and vis.shape == (9, 36) and np.isfinite(tracks).all()
            assert meta["fps"] == 16 and meta["source_fps"] == 24 and raw["txt"].decode()
    assert ids == {g + ".mp4" for g in GOOD}
    reasons = {s["path"]: s["reason"].split(":")[0] for s in summary["skipped"]}
    assert reasons == {stem + ".mp4": kind for stem, kind in BROKEN.items()}
    on_disk = json.load(open(os.path.join(out, "report.json")))
    assert on_disk["skipped_by_reason"]["decode_error"] == 2 and on_disk["num_samples"] == len(GOOD)


@pytest.mark.slow
def test_killed_job_resumes_to_the_same_shards(videos, reference, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "out"
    # 1) stop after one shard, 2) die in the middle of a shard, leaving a half-written temp file.
    partial = run_prepare(_cfg(videos, out, max_shards=1), tracker=NaNOnFlatTracker())
    assert not partial["complete"] and partial["num_shards_finished"] == 1
    with pytest.raises(KeyboardInterrupt):
        run_prepare(_cfg(videos, out), tracker=InterruptingTracker(after=2))
    with open(out / "shard-000003.tar.tmp", "wb") as f:
        f.write(b"half a shard")
    assert _digest(out) != _digest(ref_out)
    final = run_prepare(_cfg(videos, out), tracker=NaNOnFlatTracker())
    assert final["complete"]
    assert _digest(out) == _digest(ref_out)
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_rerun_with_other_settings_is_refused(videos, reference):
    out, _ = reference
    with pytest.raises(ValueError, match="num_frames"):
        run_prepare(_cfg(videos, out, num_frames=5))


@pytest.mark.multiproc  # two spawned workers, each importing torch
def test_parallel_workers_match_in_process(videos, reference, tmp_path):
    """Spawned workers build their tracker from a spec; output must equal the in-process run."""
    ref_out, _ = reference
    (tmp_path / "in").mkdir()
    for stem in GOOD[:3] + ["corrupt", "empty"]:
        for ext in (".mp4", ".txt"):
            os.link(os.path.join(videos, stem + ext), tmp_path / "in" / (stem + ext))
    single = run_prepare(_cfg(str(tmp_path / "in"), tmp_path / "a"), tracker={"name": "lk"})
    multi = run_prepare(_cfg(str(tmp_path / "in"), tmp_path / "b", num_workers=2), tracker={"name": "lk"})
    assert single["num_samples"] == multi["num_samples"] == 3 and multi["num_skipped"] == 2
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


class CrashingTracker(LucasKanadeTracker):
    """Kills its process on a flat grey video, like a segfaulting decoder would."""

    def _track(self, frames, queries):
        if frames.std() < 2:
            os._exit(3)
        return super()._track(frames, queries)


@pytest.mark.slow
def test_native_crash_is_isolated_and_reported(videos, tmp_path):
    (tmp_path / "in").mkdir()
    for stem in ["good0", "good1", "nantracks", "good2", "good3"]:
        for ext in (".mp4", ".txt"):
            os.link(os.path.join(videos, stem + ext), tmp_path / "in" / (stem + ext))
    # fork: the tracker object (defined in this test module) is inherited, not pickled.
    summary = run_prepare(
        _cfg(str(tmp_path / "in"), tmp_path / "out", samples_per_shard=2, num_workers=2, start_method="fork"),
        tracker=CrashingTracker(),
    )
    assert summary["complete"] and summary["num_samples"] == 4
    assert [s["path"] for s in summary["skipped"]] == ["nantracks.mp4"]
    assert summary["skipped"][0]["reason"].startswith("crashed")
    assert json.load(open(tmp_path / "out" / "crashed.json")) == [str(tmp_path / "in" / "nantracks.mp4")]


class FakeTextEncoder:
    """encode(texts) -> ([B, L, D] embeddings, [B] lengths), one token per word."""

    def encode(self, texts):
        lengths = torch.tensor([len(t.split()) for t in texts])
        emb = torch.zeros(len(texts), int(lengths.max()), 8)
        for i, t in enumerate(texts):
            for j, word in enumerate(t.split()):
                emb[i, j] = len(word)
        return emb, lengths


class FakeLatentEncoder:
    """encode(video [B, 3, T, H, W] in [-1, 1]) -> [B, 4, 1 + (T - 1) // 4, H // 8, W // 8]."""

    def encode(self, video):
        assert video.min() >= -1 and video.max() <= 1
        b, _, t, h, w = video.shape
        pooled = torch.nn.functional.adaptive_avg_pool3d(video, (1 + (t - 1) // 4, h // 8, w // 8))
        return torch.cat([pooled, pooled[:, :1]], dim=1)


def test_cached_text_embeddings_and_latents(videos, tmp_path):
    (tmp_path / "in").mkdir()
    for stem in GOOD[:4]:
        for ext in (".mp4", ".txt"):
            os.link(os.path.join(videos, stem + ext), tmp_path / "in" / (stem + ext))
    out = tmp_path / "out"
    cfg = _cfg(str(tmp_path / "in"), out, store_video=False, text_batch_size=3)
    summary = run_prepare(
        cfg, tracker={"name": "lk"}, text_encoder=FakeTextEncoder(), latent_encoder=FakeLatentEncoder()
    )
    assert summary["num_samples"] == 4
    stream = ShardStream(str(out), batch_size=2, shuffle_buffer=1, decode_video=False)
    batch = next(iter(stream))
    assert "video" not in batch and batch["latents"].shape == (2, 4, 3, 4, 7)
    assert batch["latents"].dtype == torch.float16
    words = [len(c.split()) for c in batch["caption"]]
    assert batch["text_len"].tolist() == words and batch["text_emb"].shape == (2, max(words), 8)
    assert batch["text_emb"][0, 0, 0].item() == len(batch["caption"][0].split()[0])


@pytest.mark.slow
def test_hydra_cli(videos, tmp_path, run_module):
    (tmp_path / "in").mkdir()
    for stem in GOOD[:2] + ["empty"]:
        for ext in (".mp4", ".txt"):
            os.link(os.path.join(videos, stem + ext), tmp_path / "in" / (stem + ext))
    out = tmp_path / "out"
    args = [
        f"input={tmp_path / 'in'}",
        f"output={out}",
        "num_frames=9",
        "height=32",
        "width=56",
        "grid_size=5",
        "num_workers=0",
        "progress=false",
    ]
    run_module("trackstream.data.prepare", *args, timeout=300)
    report = json.load(open(out / "report.json"))
    assert report["num_samples"] == 2 and report["skipped"] == [{"path": "empty.mp4", "reason": "empty_file"}]
    assert json.load(open(out / "index.json"))["shards"] == [{"name": "shard-000000.tar", "num_samples": 2}]
    # every input skipped (here: only the empty file) is an error with the reasons, not a silent 0 shards
    (tmp_path / "bad").mkdir()
    for ext in (".mp4", ".txt"):
        os.link(os.path.join(videos, "empty" + ext), tmp_path / "bad" / ("empty" + ext))
    bad = [f"input={tmp_path / 'bad'}", f"output={tmp_path / 'bad_out'}", *args[2:]]
    res = run_module("trackstream.data.prepare", *bad, check=False, timeout=300)
    assert res.returncode != 0 and "prepare wrote no sample: all 1 inputs were skipped (empty_file x1)" in res.stderr


def test_hydra_config_composes_with_tracker_preset():
    from hydra import compose, initialize_config_dir

    from trackstream.data.prepare import config_from_hydra

    with initialize_config_dir(config_dir=os.path.join(REPO, "conf"), version_base="1.3"):
        cfg = compose(
            "prepare",
            overrides=[
                "input=/in",
                "output=/out",
                "tracker=cotracker3_online",
                "tracker.checkpoint=/c.pth",
                "text_encoder={_target_: a.B, path: /t}",
            ],
        )
    pcfg, specs = config_from_hydra(cfg)
    assert pcfg.grid_size == 50 and pcfg.fps == 16 and pcfg.num_frames == 81
    assert specs["tracker"] == {"name": "cotracker3_online", "checkpoint": "/c.pth", "device": "auto"}
    assert specs["text_encoder"] == {"_target_": "a.B", "path": "/t"} and specs["latent_encoder"] is None


def test_a_file_name_that_is_not_utf8_is_prepared_not_fatal(videos, tmp_path):
    """A name with bytes that are not UTF-8 (a Latin-1 download, say) neither kills the job nor is lost."""
    src = tmp_path / "in"
    src.mkdir()
    for stem in GOOD[:2]:
        for ext in (".mp4", ".txt"):
            os.link(os.path.join(videos, stem + ext), src / (stem + ext))
    for ext in (".mp4", ".txt"):  # the first video again under the name "caf\xe9" in Latin-1
        os.link(os.path.join(videos, GOOD[0] + ext), os.path.join(os.fsencode(src), b"caf\xe9" + ext.encode()))
    summary = run_prepare(_cfg(str(src), tmp_path / "out"), tracker={"name": "lk"})
    assert summary["complete"] and summary["num_samples"] == 3 and summary["num_skipped"] == 0, summary
    json.dumps(summary)  # the report holds the name (escaped), not an unencodable string


def test_upscaled_sources_are_counted_and_small_ones_can_be_skipped(videos, tmp_path):
    """Sources smaller than the output size are upscaled and said so (report.json, each sample's meta);
    ``min_source_height`` / ``min_source_width`` skip them instead."""
    src = tmp_path / "in"
    src.mkdir()
    for ext in (".mp4", ".txt"):
        os.link(os.path.join(videos, GOOD[0] + ext), src / (GOOD[0] + ext))
    h, w = SOURCE.height, SOURCE.width
    big = run_prepare(_cfg(str(src), tmp_path / "big", height=2 * h, width=2 * w), tracker={"name": "lk"})
    assert big["num_samples"] == 1 and big["upscaled"] == 1 and big["max_upscale"] == 2.0, big
    small = run_prepare(_cfg(str(src), tmp_path / "small"), tracker={"name": "lk"})
    assert small["upscaled"] == 0 and small["max_upscale"] == 1.0
    kept = run_prepare(_cfg(str(src), tmp_path / "min", min_source_height=h + 1), tracker={"name": "lk"})
    assert kept["num_samples"] == 0 and kept["skipped_by_reason"] == {"low_resolution": 1}


def test_the_progress_bar_counts_videos(videos, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for stem in GOOD[:3]:
        for ext in (".mp4", ".txt"):
            os.link(os.path.join(videos, stem + ext), src / (stem + ext))
    run_prepare(_cfg(str(src), tmp_path / "out", progress=True, samples_per_shard=64), tracker={"name": "lk"})
    err = capsys.readouterr().err
    assert "videos:" in err and "0/3" in err and "3/3" in err, err[-500:]  # one shard of three videos
