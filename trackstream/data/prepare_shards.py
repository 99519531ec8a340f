"""Real-video -> webdataset shard pipeline (library side; the Hydra CLI is trackstream/data/prepare.py).

Design:
* Plan first, then work. Inputs (a folder, a list file or a CSV/JSON manifest) are resolved to a
  fixed list of (path, caption) items and cut into consecutive groups of `samples_per_shard`;
  group k becomes shard k whatever happens to other groups. A shard is therefore a pure function
  of its inputs, so a killed job that is re-run produces byte-identical shards (x264, tar headers
  and metadata are all deterministic) and parallel workers cannot reorder anything.
* A shard is the unit of work and of resumption: its tar is written to `<name>.tmp` and renamed,
  then its report `<name>.json` is written the same way. A shard with a report is finished and is
  skipped on re-run; anything else is redone from scratch. plan.json pins the plan: re-running into
  the same folder with other inputs or content-changing settings is refused.
* One bad file never kills the job. Every per-file failure is caught and recorded with a reason
  (`kind: detail`). A native crash (decoders can segfault on hostile files) breaks the worker
  pool; the shards in flight are then re-run one at a time, each worker having announced the file
  it is on in .progress/, so the culprit is identified, recorded in crashed.json and skipped.
* Workers build their own tracker / text encoder / latent encoder from dict specs (a `_target_`
  spec via Hydra's instantiate, or a tracker spec `{name: ..., ...}` via build_tracker), so nothing
  heavy is pickled; objects are accepted too (tests, in-process use).
* `num_jobs`/`job_index` split the shards across independent processes (e.g. a Slurm array); each
  run rewrites report.json and index.json from all shard reports present, with `complete` telling
  whether every shard is done.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import glob
import hashlib
import json
import multiprocessing as mp
import os
from collections import Counter
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field

import numpy as np

from trackstream.data import prepare_worker as worker
from trackstream.data.progress import progress_bar
from trackstream.data.shards import ShardInfo, write_index
from trackstream.models.precision import precision_name

CACHE_DTYPES = {"fp16": "float16", "fp32": "float32"}  # the precisions numpy can store
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")
MISSING_CAPTION = ("empty", "filename", "skip")
SCENE_CUTS = ("split", "drop", "keep")


@dataclass
class PrepareConfig:
    input: str  # folder of videos, list file (.txt, one path per line) or manifest (.csv/.json/.jsonl)
    output: str
    captions: str | None = None  # CSV/JSON(L) manifest with captions; default: manifest columns or sidecar .txt
    path_column: str = "video"
    caption_column: str = "caption"
    # a video with no caption: "empty" (caption ""), "filename" (its file name) or "skip" (reason missing_caption)
    missing_caption: str = "empty"
    fps: float = 16.0
    num_frames: int = 81
    height: int = 480
    width: int = 832
    # width / height of the source (16:9 = 1.78); every source is fitted to height x width by one rule: scaled to
    # cover it, then centre-cropped (video_io.resize_center_crop). The default range takes square to 2.39:1 films;
    # MotionStream (appendix D) kept 16:9 sources only: min_aspect=1.6 max_aspect=2.0
    min_aspect: float = 1.0
    max_aspect: float = 2.4
    min_source_fps: float = 15.0  # below the target rate frames would be duplicated: reject
    max_source_fps: float = 240.0
    # sources smaller than this are skipped (reason low_resolution); 0: any size, smaller ones are upscaled
    # to height x width and counted in report.json (upscaled)
    min_source_height: int = 0
    min_source_width: int = 0
    grid_size: int = 50
    min_visible_fraction: float = 0.05  # of (frame, track) entries; lower means the tracker failed
    # scene cuts (data.prepare_cuts): "split" takes the clip from the first num_frames frames of one shot within the
    # first scene_cut_search clip lengths, "drop" skips a video with a cut in its first num_frames, "keep" does not
    # look; a cut is a colour-histogram distance (0..2) above scene_cut_threshold between consecutive frames
    scene_cuts: str = "split"
    scene_cut_threshold: float = 0.3
    scene_cut_search: int = 4
    samples_per_shard: int = 64
    num_workers: int = 1  # 0: in-process (no crash isolation)
    start_method: str = "spawn"  # "fork" only for debugging: forked children can deadlock in thread pools
    max_shards: int | None = None  # stop after this many shards in this run (the rest stays pending)
    num_jobs: int = 1
    job_index: int = 0
    store_video: bool = True
    crf: int = 18
    text_batch_size: int = 16
    cache_dtype: str = "fp16"  # cached text embeddings / latents: fp16 | fp32 (numpy stores no bf16)
    progress: bool = True
    shard_pattern: str = "shard-{:06d}"
    extensions: tuple[str, ...] = field(default_factory=lambda: VIDEO_EXTENSIONS)

    def __post_init__(self):
        if self.height % 2 or self.width % 2:
            raise ValueError(f"prepare height/width must be even (H.264 yuv420p), got {self.height}x{self.width}")
        if self.samples_per_shard < 1:
            raise ValueError(f"prepare samples_per_shard must be >= 1, got {self.samples_per_shard}")
        if self.missing_caption not in MISSING_CAPTION:
            raise ValueError(f"prepare missing_caption={self.missing_caption!r}; choose {' | '.join(MISSING_CAPTION)}")
        if self.scene_cuts not in SCENE_CUTS:
            raise ValueError(f"prepare scene_cuts={self.scene_cuts!r}; choose {' | '.join(SCENE_CUTS)}")
        if self.scene_cut_search < 1:
            raise ValueError(f"prepare scene_cut_search={self.scene_cut_search} must be >= 1 (clip lengths searched)")
        if not 0 < self.min_aspect <= self.max_aspect:
            raise ValueError(
                f"prepare min_aspect={self.min_aspect} / max_aspect={self.max_aspect}: need 0 < min <= max"
            )
        if not 0 <= self.job_index < self.num_jobs:
            raise ValueError(f"prepare job_index must be in [0, num_jobs), got {self.job_index}/{self.num_jobs}")
        self.extensions = tuple(e.lower() for e in self.extensions)
        self.cache_dtype = precision_name(self.cache_dtype, field="cache_dtype")
        if self.cache_dtype not in CACHE_DTYPES:
            raise ValueError(f"cache_dtype={self.cache_dtype!r}: the cache is stored by numpy; choose fp16 or fp32")

    @property
    def numpy_cache_dtype(self) -> np.dtype:
        return np.dtype(CACHE_DTYPES[self.cache_dtype])

    def content_fingerprint(self) -> dict:
        """Settings that change shard contents; a resumed run must match them."""
        skip = {
            "output",
            "num_workers",
            "start_method",
            "max_shards",
            "num_jobs",
            "job_index",
            "progress",
            "text_batch_size",
        }
        # the storage dtype as numpy names it (float16): the same fingerprint whichever spelling was given
        return {**{k: v for k, v in asdict(self).items() if k not in skip}, "cache_dtype": self.numpy_cache_dtype.name}


@dataclass(frozen=True)
class Item:
    path: str
    rel: str  # id: path relative to the input root (or as listed)
    caption: str | None


# ------------------------------------------------------------------------------------------------
# Planning


def _read_manifest(path: str, path_column: str, caption_column: str) -> list[dict]:
    if path.endswith(".csv"):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    elif path.endswith(".jsonl"):
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    else:
        with open(path) as f:
            rows = json.load(f)
    if rows and path_column not in rows[0]:
        raise ValueError(
            f"manifest {path} has no column {path_column!r} (columns: {sorted(rows[0])}); set prepare path_column"
        )
    return [{"path": str(r[path_column]), "caption": r.get(caption_column)} for r in rows]


def resolve_inputs(cfg: PrepareConfig) -> list[Item]:
    """Input spec -> ordered items with captions (None when missing)."""
    src = cfg.input
    if os.path.isdir(src):
        root = src
        rels = sorted(
            os.path.relpath(os.path.join(d, f), root)
            for d, _, files in os.walk(root)
            for f in files
            if f.lower().endswith(cfg.extensions)
        )
        rows = [{"path": r, "caption": None} for r in rels]
    elif os.path.isfile(src):
        root = os.path.dirname(os.path.abspath(src))
        if src.endswith((".csv", ".json", ".jsonl")):
            rows = _read_manifest(src, cfg.path_column, cfg.caption_column)
        else:
            with open(src) as f:
                rows = [
                    {"path": line.strip(), "caption": None} for line in f if line.strip() and not line.startswith("#")
                ]
    else:
        raise ValueError(f"prepare input={src!r} is neither a folder nor a list/manifest file")
    extra = {}
    if cfg.captions:
        for r in _read_manifest(cfg.captions, cfg.path_column, cfg.caption_column):
            extra[r["path"]] = extra[os.path.basename(r["path"])] = r["caption"]
    items = []
    for r in rows:
        path = r["path"] if os.path.isabs(r["path"]) else os.path.join(root, r["path"])
        caption = r["caption"] or extra.get(r["path"]) or extra.get(os.path.basename(r["path"]))
        if not caption:
            sidecar = os.path.splitext(path)[0] + ".txt"
            if os.path.isfile(sidecar):
                with open(sidecar, encoding="utf-8") as f:
                    caption = f.read().strip()
        items.append(Item(path=path, rel=r["path"], caption=caption.strip() if caption else None))
    return items


def plan_shards(items: list[Item], samples_per_shard: int) -> list[list[Item]]:
    return [items[i : i + samples_per_shard] for i in range(0, len(items), samples_per_shard)]


def _check_plan(cfg: PrepareConfig, items: list[Item]) -> None:
    """Pin the folder to its inputs and content settings (plan.json), so that a resumed run cannot mix shards
    of two plans. Only a folder holding a sample is pinned: one whose runs wrote none (every input skipped,
    or stopped before the first shard) starts afresh under the new plan."""
    digest = hashlib.sha256(json.dumps([[i.rel, i.caption] for i in items]).encode()).hexdigest()
    plan = {"inputs_sha256": digest, "num_inputs": len(items), "config": cfg.content_fingerprint()}
    plan = json.loads(json.dumps(plan))  # tuples -> lists, as they come back from disk
    path = os.path.join(cfg.output, "plan.json")
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
        if old == plan:
            return
        if _holds_samples(cfg):
            raise ValueError(_plan_change(cfg.output, old, plan))
        _clear_unpinned(cfg)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(plan, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _plan_change(output: str, old: dict, new: dict) -> str:
    """One line saying what differs between the folder's plan and this run's."""
    before = old.get("config", {})
    changed = sorted(k for k in set(before) | set(new["config"]) if before.get(k) != new["config"].get(k))
    if changed:
        shown = ", ".join(f"{k}={before.get(k)!r} there, {new['config'].get(k)!r} now" for k in changed[:4])
        what = f"other settings ({shown}{', ...' if len(changed) > 4 else ''})"
    else:
        what = "another input list or other captions"
    return (
        f"output={output!r} holds samples prepared from {what}; prepare into a new output folder, or run the "
        "command that made it to finish it"
    )


def _shard_files(cfg: PrepareConfig, suffix: str) -> list[str]:
    prefix = cfg.shard_pattern.split("{", 1)[0]
    return glob.glob(os.path.join(glob.escape(cfg.output), glob.escape(prefix) + "*" + suffix))


def _holds_samples(cfg: PrepareConfig) -> bool:
    """Whether a finished shard of this folder holds a sample (its report, written last, says so)."""
    if _shard_files(cfg, ".tar"):
        return True
    for path in _shard_files(cfg, ".json"):
        try:
            with open(path) as f:
                if json.load(f).get("num_samples", 0) > 0:
                    return True
        except (OSError, ValueError, AttributeError):
            return True  # not a report this pipeline reads: leave the folder alone
    return False


def _clear_unpinned(cfg: PrepareConfig) -> None:
    """Remove what earlier runs left in a folder that holds no sample: their plan, shard reports and summaries."""
    paths = [os.path.join(cfg.output, n) for n in ("plan.json", "report.json", "index.json", "crashed.json")]
    for path in paths + _shard_files(cfg, ".json") + _shard_files(cfg, ".tmp"):
        if os.path.isfile(path):
            os.remove(path)
    for marker in glob.glob(os.path.join(glob.escape(cfg.output), ".progress", "*.current")):
        os.remove(marker)
    print(f"note: output={cfg.output!r} held no sample of an earlier run with another plan; starting it afresh")


# ------------------------------------------------------------------------------------------------
# Running


class PrepareRefused(ValueError):
    """Nothing to prepare, or a component that cannot be built: refused before writing anything; the CLI
    prints the one-line message and exits non-zero (``data.prepare``)."""


def run_prepare(cfg: PrepareConfig, *, tracker=None, text_encoder=None, latent_encoder=None) -> dict:
    """Run (or resume) the pipeline; returns the summary also written to <output>/report.json.

    tracker / text_encoder / latent_encoder: dict specs (built inside each worker) or objects.
    tracker defaults to {"name": "lk"}.
    """
    items = resolve_inputs(cfg)
    if not items:
        raise PrepareRefused(
            f"input={cfg.input!r} holds no video (looked for {', '.join(cfg.extensions)}, in subfolders too); "
            "point input= at the folder of videos or a list / manifest file"
        )
    specs = {
        "tracker": tracker if tracker is not None else {"name": "lk"},
        "text_encoder": text_encoder,
        "latent_encoder": latent_encoder,
    }
    # before anything is written: a component that cannot be built would skip every video
    for kind, spec in specs.items():
        try:
            worker.check_component(spec, kind)
        except ValueError as err:
            raise PrepareRefused(str(err)) from None
    os.makedirs(cfg.output, exist_ok=True)
    _check_plan(cfg, items)
    shards = plan_shards(items, cfg.samples_per_shard)
    mine = [k for k in range(len(shards)) if k % cfg.num_jobs == cfg.job_index]
    pending = [k for k in mine if not os.path.isfile(_report_path(cfg, k))]
    for k in pending:  # leftovers of a killed run; rewritten from scratch below
        for stale in glob.glob(os.path.join(cfg.output, cfg.shard_pattern.format(k) + ".*.tmp")):
            os.remove(stale)
    if cfg.max_shards is not None:
        pending = pending[: cfg.max_shards]
    crashed_path = os.path.join(cfg.output, "crashed.json")
    crashed: set[str] = set()
    if os.path.isfile(crashed_path):
        with open(crashed_path) as f:
            crashed = set(json.load(f))

    # counts videos, each as its worker finishes it (a shard of 64 takes minutes); off a terminal, a line every 30 s
    total = sum(len(shards[k]) for k in pending)
    bar = progress_bar(total=total, desc="videos", unit="video", disable=not cfg.progress)
    counts = Counter()

    def done(report: dict) -> None:
        counts["samples"] += report["num_samples"]
        counts["skipped"] += len(report["skipped"])
        counts["upscaled"] += report.get("upscaled", 0)
        bar.set_postfix(samples=counts["samples"], skipped=counts["skipped"], upscaled=counts["upscaled"])

    def tick(text: str | None = None) -> None:  # a video done, or what a worker is doing now
        if text is None:
            bar.set_description_str("videos", refresh=False)
            bar.update(1)
        else:
            bar.set_description_str(f"videos ({text})")

    if cfg.num_workers == 0:
        worker.init_worker(cfg, specs, in_pool=False, tick=tick)
        for k in pending:
            done(worker.run_shard(k, shards[k], sorted(crashed)))
    else:
        broken = _run_pool(cfg, specs, shards, pending, crashed, done, max_workers=cfg.num_workers, tick=tick, bar=bar)
        for k in broken:  # re-run the shards a crash interrupted, one at a time, to find the culprit
            while True:
                if not _run_pool(cfg, specs, shards, [k], crashed, done, max_workers=1, tick=tick, bar=bar):
                    break
                marker = os.path.join(cfg.output, ".progress", cfg.shard_pattern.format(k) + ".current")
                culprit = None
                if os.path.isfile(marker):
                    with open(marker, errors="surrogateescape") as f:
                        culprit = f.read().strip()
                if culprit is None or culprit in crashed:
                    raise RuntimeError(
                        f"a worker crashed on shard {k} and the file responsible could not be identified"
                    )
                crashed.add(culprit)
                tmp = crashed_path + ".tmp"
                with open(tmp, "w") as f:
                    json.dump(sorted(crashed), f, indent=1)
                os.replace(tmp, crashed_path)
    bar.set_description_str("videos")
    bar.close()
    return write_summary(cfg, shards)


def _run_pool(cfg, specs, shards, todo, crashed, done, *, max_workers: int, tick, bar) -> list[int]:
    """Run shards in a process pool; returns the shards left unfinished by a worker crash. Workers put a
    tick (1) per video and their status text on a queue, which ``tick`` shows while their shards run; the bar is
    redrawn twice a second so that its clock moves while a long video decodes and tracks (off a terminal this asks
    for a line, printed only when its interval has passed)."""
    if not todo:
        return []
    ctx = mp.get_context(cfg.start_method)
    with ctx.Manager() as manager:
        ticks = manager.Queue()

        def drain() -> None:
            while not ticks.empty():
                got = ticks.get_nowait()
                tick(got if isinstance(got, str) else None)
            bar.refresh()

        with cf.ProcessPoolExecutor(
            min(max_workers, len(todo)),
            mp_context=ctx,
            initializer=worker.init_worker,
            initargs=(cfg, specs, True, ticks),
        ) as pool:
            futures = {pool.submit(worker.run_shard, k, shards[k], sorted(crashed)): k for k in todo}
            waiting = set(futures)
            try:
                while waiting:
                    finished, waiting = cf.wait(waiting, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                    drain()
                    for fut in finished:
                        done(fut.result())
            except BrokenProcessPool:
                drain()
                return sorted(k for f, k in futures.items() if not f.done() or f.exception() is not None)
            drain()
    return []


def _report_path(cfg: PrepareConfig, shard_id: int) -> str:
    return os.path.join(cfg.output, cfg.shard_pattern.format(shard_id) + ".json")


def write_summary(cfg: PrepareConfig, shards: list[list[Item]]) -> dict:
    """Aggregate all shard reports present into report.json and index.json."""
    finished, pending, skipped = [], [], []
    for k in range(len(shards)):
        path = _report_path(cfg, k)
        if not os.path.isfile(path):
            pending.append(k)
            continue
        with open(path) as f:
            report = json.load(f)
        finished.append(report)
        skipped += report["skipped"]
    index = [
        ShardInfo(os.path.join(cfg.output, r["name"] + ".tar"), r["num_samples"])
        for r in finished
        if r["num_samples"] > 0
    ]
    write_index(cfg.output, index)
    summary = {
        "complete": not pending,
        "num_inputs": sum(len(s) for s in shards),
        "num_shards_planned": len(shards),
        "num_shards_finished": len(finished),
        "pending_shards": pending,
        "num_samples": sum(r["num_samples"] for r in finished),
        "num_skipped": len(skipped),
        "skipped_by_reason": dict(sorted(Counter(s["reason"].split(":", 1)[0] for s in skipped).items())),
        "skipped": skipped,
        # sources smaller than height x width, scaled up to it (how much: each sample's meta "upscale")
        "upscaled": sum(r.get("upscaled", 0) for r in finished),
        # samples whose video had no caption (they carry missing_caption's), and samples that start after a scene
        # cut (scene_cuts=split); videos with no clip of one shot are skipped as scene_cut
        "uncaptioned": sum(r.get("uncaptioned", 0) for r in finished),
        "missing_caption": cfg.missing_caption,
        "split_at_cut": sum(r.get("split_at_cut", 0) for r in finished),
        "max_upscale": max([r.get("max_upscale", 1.0) for r in finished], default=1.0),
        "shards": [{"name": r["name"], "num_samples": r["num_samples"]} for r in finished],
    }
    tmp = os.path.join(cfg.output, "report.json.tmp")
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(tmp, os.path.join(cfg.output, "report.json"))
    return summary
