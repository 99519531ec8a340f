"""Does the live demo page keep a synthetic scene's objects while nobody drags?

    python -m lab.page_hold --out runs/page-hold            # the shipped student, scenes 0 and 1

Starts the real demo server (``python -m trackstream.stream.demo``, one session at a time) and drives a real
headless Chromium (Debian's ``chromium``, through Playwright) as a person would: pick a scene, in mode ``grid``
press "Grid of points" at the page's default spacing (in mode ``none`` lay no point), press Start, and keep the
first ``--frames`` + 1 frames the page receives (48 frames: 3 seconds at 16 fps). Nothing is dragged, so the
points stay where they were laid and the scene's objects should stay where they are.

The page draws the grid's offset and jitter from ``demo.random``; it is replaced by a PRNG seeded with
``--seed`` + the scene, so a run lays the same grid again. Per (scene, mode) row: each sprite of the scene's
first frame (``eval.placements.sprite_masks`` on the world clip the server draws the scene from) is found in the
received frames by ``eval.drag_metrics.object_track``, its template taken from the scene's own first frame: kept
at frame 0 says how faithfully the page got the scene (the codec's round trip, then JPEG), later frames are
charged for every change of the object's look. Kept is the mean over sprites at frames 0, 16 and ``--frames``;
``mad_last``: the mean absolute pixel difference (0-255) of frame ``--frames`` against frame 0 as received;
``mad_first``: the received frame 0 against the scene's.

Writes ``page_hold.json``, ``page_hold.md`` (the table), ``strip_scene{k}_{mode}.png`` (frames 0, 16 and
``--frames``, 4x nearest) and ``server.log`` into ``--out``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from trackstream.eval.tables import markdown_table

__all__ = ["main", "page_hold", "hold_figures", "strip"]

ROOT = Path(__file__).resolve().parents[1]
MODES = ("grid", "none")
MID = 16  # one second in at 16 fps: the frame the table reads besides the last

# mulberry32, a seeded stand-in for Math.random (same range [0, 1)): the page draws its grid its own way, reproducibly
SEED_RANDOM = """(seed) => {
  let a = seed >>> 0;
  demo.random = () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}"""


def _chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        raise ValueError("Debian's chromium is not installed: apt-get install chromium (or `make browser`)")
    return exe


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health(url: str) -> dict:
    with urllib.request.urlopen(url + "/health", timeout=2) as r:
        return json.loads(r.read())


@contextmanager
def demo_server(student: Path, codec: Path | None, *, scenes: int, log: Path, timeout: float):
    """The demo server on a free port with one session slot, up (its /health answers) -> its URL; SIGTERM after."""
    port = _free_port()
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, OMP_WAIT_POLICY="PASSIVE")  # spinning OpenMP threads starve the browser
    cmd = [sys.executable, "-m", "trackstream.stream.demo", "--student", str(student)]
    cmd += [] if codec is None else ["--codec", str(codec)]  # None: the codec the student's folder records
    cmd += ["--port", str(port), "--max-sessions", "1", "--scenes", str(scenes)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(proc, url, log, timeout)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_up(proc: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            _health(url)
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the demo server did not come up (log: {log}):\n{log.read_text()[-2000:]}")
            time.sleep(0.5)


def _no_session(url: str, seconds: float = 30) -> None:
    """Until the server holds no session: a closed page frees its one slot only once the server has seen it go."""
    deadline = time.time() + seconds
    while _health(url)["sessions"]:
        if time.time() > deadline:
            raise RuntimeError(f"the server still holds a session {seconds:g} s after its page closed")
        time.sleep(0.2)


def _decode(images: list) -> dict:
    """[[n, base64 JPEG]] as the page kept them -> {n: uint8 RGB frame}."""
    import cv2

    return {
        n: cv2.imdecode(np.frombuffer(base64.b64decode(b), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1] for n, b in images
    }


def page_session(browser, url: str, *, scene: int, mode: str, seed: int, frames: int, timeout: float) -> dict:
    """One stream from a fresh page -> {video uint8 [frames + 1, H, W, 3], points [[x, y]], grid, size (H, W)}."""
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    try:
        page.goto(url)
        page.wait_for_function("document.getElementById('status').dataset.state === 'ready'", timeout=30000)
        page.select_option("#scene", str(scene))
        page.evaluate(SEED_RANDOM, seed + scene)
        if mode == "grid":
            page.click("#grid")  # at the page's default spacing: what a person gets by pressing it
        points = page.evaluate("demo.points.map((p) => [p.x, p.y])")
        grid = page.evaluate("demo.lastGrid")
        page.click("#start")
        newest = f"demo.frames.length > 0 && demo.frames[demo.frames.length - 1].n >= {frames}"
        page.wait_for_function(newest, timeout=timeout * 1000)
        got = _decode(page.evaluate("demo.exportFrames()"))
        if page.evaluate("demo.stats.errors"):
            raise RuntimeError(f"scene {scene} {mode}: the page reported: {page.evaluate('demo.lastError')}")
        size = tuple(page.evaluate("[demo.H, demo.W]"))
    finally:
        page.close()
    missing = [n for n in range(frames + 1) if n not in got]
    if missing:
        raise RuntimeError(f"scene {scene} {mode}: frames {missing[:8]} did not reach the page")
    video = np.stack([got[n] for n in range(frames + 1)])
    return {"video": video, "points": points, "grid": grid, "size": size}


def scene_clip(student: Path, k: int) -> dict:
    """The world clip the server draws scene ``k`` from (``stream.demo.session.scene_clip``, at the seed offset the
    CLI's server always runs with)."""
    from trackstream.stream.demo.session import scene_clip as page_scene

    return page_scene(student, k)


def hold_figures(video: np.ndarray, first: np.ndarray, masks: list, marks: list[int]) -> dict:
    """``video`` uint8 [T, H, W, 3] as received, ``first`` the scene's own frame 0, ``masks`` its sprites ->
    kept (mean over sprites) at ``marks``, the mean absolute differences."""
    from trackstream.eval.drag_metrics import object_track

    # the scene's frame put first: object_track's template is frame 0, and it should be the object as the scene
    # has it, not as JPEG delivered it
    ref = np.concatenate([first[None], video])
    kept = np.mean([object_track(ref, m)[1][1:] for m in masks], axis=0) if masks else None
    diff = lambda a, b: round(float(np.abs(a.astype(np.float64) - b).mean()), 2)  # noqa: E731
    return {
        "kept": {str(t): None if kept is None else round(float(kept[t]), 4) for t in marks},
        "mad_last": diff(video[marks[-1]], video[0]),
        "mad_first": diff(video[0], first),
        "sprites": len(masks),
    }


def strip(video: np.ndarray, marks: list[int], *, scale: int = 4, gap: int = 2) -> np.ndarray:
    """Frames ``marks`` side by side, each ``scale`` x nearest, ``gap`` white pixels between: uint8 RGB."""
    import cv2

    tiles = [cv2.resize(video[t], None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) for t in marks]
    white = np.full((tiles[0].shape[0], gap, 3), 255, np.uint8)
    return np.concatenate([x for tile in tiles for x in (white, tile)][1:], axis=1)


def _table(rows: list[dict], frames: int) -> str:
    cells = []
    for r in rows:
        kept = ["no sprites"] * 2 if not r["sprites"] else [f"{r['kept'][str(t)]:.3f}" for t in (MID, frames)]
        cells.append([r["scene"], r["mode"], r["points"], *kept, f"{r['mad_last']:.2f}"])
    head = ["scene", "mode", "points", f"object kept at {MID}", f"at {frames}", f"mean abs diff at {frames}"]
    return "\n".join(markdown_table(head, cells)) + "\n"


def page_hold(
    student: Path,
    codec: Path | None,
    *,
    out: Path,
    scenes: list[int],
    modes: list[str],
    frames: int,
    seed: int,
    timeout: float,
) -> dict:
    import cv2
    from playwright.sync_api import sync_playwright

    from trackstream.eval.placements import sprite_masks

    exe = _chromium()  # refused before the server's minute of loading
    out.mkdir(parents=True, exist_ok=True)
    marks = sorted({0, MID, frames})
    rows = []
    server = demo_server(student, codec, scenes=max(scenes) + 1, log=out / "server.log", timeout=timeout)
    with server as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        for k in scenes:
            for mode in modes:
                t0 = time.perf_counter()
                _no_session(url)
                got = page_session(browser, url, scene=k, mode=mode, seed=seed, frames=frames, timeout=timeout)
                clip = scene_clip(student, k)
                fig = hold_figures(got["video"], clip["frames"][0], sprite_masks(clip), marks)
                grid = None if mode == "none" else {**got["grid"], "xy": np.round(got["points"], 3).tolist()}
                rows.append({"scene": k, "mode": mode, "points": len(got["points"]), "grid": grid, **fig})
                cv2.imwrite(str(out / f"strip_scene{k}_{mode}.png"), strip(got["video"], marks)[:, :, ::-1])
                print(_progress(rows[-1], frames, time.perf_counter() - t0), flush=True)
        browser.close()
    record = {
        "student": str(student),
        "codec": None if codec is None else str(codec),
        "seed": seed,
        "frames": frames,
        "rows": rows,
    }
    (out / "page_hold.json").write_text(json.dumps(record, indent=1))
    (out / "page_hold.md").write_text(_table(rows, frames))
    return record


def _progress(row: dict, frames: int, seconds: float) -> str:
    kept = row["kept"]
    kept = f"kept@{MID} {kept[str(MID)]}, @{frames} {kept[str(frames)]}" if row["sprites"] else "no sprites"
    return (
        f"[page_hold] scene {row['scene']} {row['mode']}: {row['points']} points, {kept}, "
        f"mean abs diff {row['mad_last']} ({seconds:.0f} s)"
    )


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="run directory (under runs/: not in the tree)")
    ap.add_argument("--student", type=Path, default=ROOT / "assets" / "tiny-student" / "student")
    ap.add_argument("--codec", type=Path, default=None, help="another checkpoint of its codec (default: its own)")
    ap.add_argument("--scenes", type=_ints, default=[0, 1], help="comma-separated scene numbers of the page")
    ap.add_argument("--modes", default="grid,none", help=f"comma-separated, among {','.join(MODES)}")
    ap.add_argument("--frames", type=int, default=48, help="the last frame looked at (48: 3 s at 16 fps)")
    ap.add_argument("--seed", type=int, default=0, help="the page's grid draws: seeded with this + the scene")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds for the server to start, and per stream")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        ap.error(f"--modes {args.modes}: choose among {','.join(MODES)}")
    if not args.scenes or min(args.scenes) < 0 or args.frames < MID:
        ap.error(f"--scenes: at least one scene, none negative; --frames: at least {MID} (the table reads frame {MID})")
    page_hold(
        args.student.resolve(),
        None if args.codec is None else args.codec.resolve(),
        out=args.out,
        scenes=args.scenes,
        modes=modes,
        frames=args.frames,
        seed=args.seed,
        timeout=args.timeout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
