"""Prompt switching mid-stream (``StreamingGenerator.switch_prompt``, ``stream.recache``, ``stream.prompts``):
chunks before a switch are untouched, chunks after follow the new prompt, a switch to the same prompt is a
no-op (the re-cache is exact), memory stays flat, the re-cache costs one pass per held chunk once, and the
``generate --prompt-schedule`` file is checked line by line and streamed end to end."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import trackstream.stream.chunks as chunks_module
from trackstream.models.codecs import build_codec
from trackstream.models.streaming import CausalConfig, StreamConfig
from trackstream.models.tracks import sample_track_ids
from trackstream.stream.chunk_io import tracks_from_array
from trackstream.stream.engine import StreamingGenerator, state_nbytes
from trackstream.stream.prompts import place_switches, read_prompt_schedule

H = W = 32
B, N = 2, 6
C3S1W1 = CausalConfig(3, 1, 1, first_chunk_frames=1)
CONFIGS = {  # the default; a two-chunk window; two sampled sink chunks; the whole history (reference step)
    "c3s1w1": C3S1W1,
    "c3s1w2": CausalConfig(3, 1, 2, first_chunk_frames=1),
    "c2s2w2": CausalConfig(2, 2, 2, first_chunk_frames=None),
    "c3s1wfull": CausalConfig(3, 1, None, first_chunk_frames=1),
    # frame windows: FastVideo's [1] + [3] x k (the window cuts each chunk to 2 frames), and a window of 4 frames
    # (one whole chunk and part of the one before), absolute RoPE
    "c3s1w2frf1s": CausalConfig(3, 1, None, 1, window_frames=2, first_chunk_sampled=True),
    "c3s1w4frf1-absolute": CausalConfig(3, 1, None, 1, window_frames=4, rope="absolute"),
}


@pytest.fixture(scope="module")
def parts(tiny_network):
    net = tiny_network(0).eval()
    return net, build_codec("tiny-ae", width=16).eval()


def _inputs(num_frames, seed=1):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(B, 3, H, W, generator=g) * 2 - 1
    texts = [torch.randn(B, 5, 24, generator=g) for _ in range(2)]  # two prompts of the same length
    lens = torch.tensor([5, 3])
    ids = sample_track_ids(B, N, generator=g)
    tracks = torch.rand(B, num_frames, N, 2, generator=g) * (W - 1)
    vis = torch.rand(B, num_frames, N, generator=g) > 0.2
    return image, texts, lens, ids, tracks_from_array(tracks, vis, hold_last=True)


def _run(engine, n, switches=(), *, seed=5, sink="recache", states=None):
    """Latents of ``n`` chunks, the prompt switched to ``texts[k]`` before chunk c for (c, k) in ``switches``."""
    image, texts, lens, ids, source = _inputs(1)
    state = engine.start(image, texts[0], lens, track_ids=ids, seed=seed)
    at = dict(switches)
    outs = []
    for i in range(n):
        if i in at:
            state = engine.switch_prompt(state, texts[at[i]], lens, sink=sink)
        out, state = engine.step(state, *source(i, engine.pixel_range(i)))
        outs.append(out)
        if states is not None:
            states.append(state)
    return outs


def _engine(parts, causal=C3S1W1, **kw):
    return StreamingGenerator(*parts, config=StreamConfig(causal=causal, steps=3, shift=5.0), **kw)


def test_chunks_before_a_switch_are_identical_and_after_differ(parts):
    engine = _engine(parts)
    plain, switched = _run(engine, 7), _run(engine, 7, [(4, 1)])  # chunk 4: the window has rolled twice
    for a, b in zip(plain[:4], switched[:4]):
        assert torch.equal(a.latents, b.latents) and torch.equal(a.frames, b.frames)
    for a, b in zip(plain[4:], switched[4:]):
        assert (a.latents - b.latents).abs().max() > 1e-3
    kept = _run(engine, 7, [(4, 1)], sink="keep")  # the sink's old K/V: another stream after the switch
    assert all(torch.equal(a.latents, b.latents) for a, b in zip(kept[:4], switched[:4]))
    assert (kept[4].latents - switched[4].latents).abs().max() > 1e-4


@pytest.fixture(scope="module")
def unswitched(parts):
    """``name`` -> the 8 chunks of its configuration's stream without a switch (shared by both sinks' tests)."""
    streams = {}

    def get(name):
        if name not in streams:
            streams[name] = _run(_engine(parts, CONFIGS[name]), 8)
        return streams[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("sink", ["recache", "keep"])
def test_switching_to_the_same_prompt_changes_nothing(parts, unswitched, name, sink):
    """The re-cache re-runs each held chunk against exactly what it was committed against: under the same
    prompt it reproduces the cache, so every later chunk equals the unswitched stream."""
    engine = _engine(parts, CONFIGS[name])
    plain, same = unswitched(name), _run(engine, 8, [(3, 0), (6, 0)], sink=sink)
    for a, b in zip(plain, same):
        torch.testing.assert_close(b.latents, a.latents, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,at", [("c3s1wfull", 4), ("c3s1w2", 3), ("c2s2w2", 3)])
def test_the_recache_is_the_held_chunks_committed_under_the_new_prompt(parts, name, at):
    """Where nothing has been evicted (the whole history, or a window not yet rolled) the re-cached K/V are
    exactly those of a stream started with the new prompt that commits the same clean latents and y."""
    engine = _engine(parts, CONFIGS[name])
    image, texts, lens, ids, source = _inputs(1)
    state = engine.start(image, texts[0], lens, track_ids=ids, seed=4)
    for i in range(at):
        _, state = engine.step(state, *source(i, engine.pixel_range(i)))
    assert not state.evicted and [h.index for h in state.held] == list(range(at))
    switched = engine.switch_prompt(state, texts[1], lens)
    ref = engine.start(image, texts[1], lens, track_ids=ids, seed=4)
    for h in state.held:
        ref = replace(ref, **engine.commit(ref, h.x0, h.y), chunk=h.index + 1)
    assert len(switched.cache.chunks) == len(ref.cache.chunks) == at
    for got, want, old in zip(switched.cache.chunks, ref.cache.chunks, state.cache.chunks):
        for (k, v), (k_ref, v_ref), (k_old, _) in zip(got.layers, want.layers, old.layers):
            torch.testing.assert_close(k, k_ref, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(v, v_ref, atol=1e-5, rtol=1e-5)
        assert (got.layers[-1][0] - old.layers[-1][0]).abs().max() > 1e-4  # the prompt reached the K/V
    kept = engine.switch_prompt(state, texts[1], lens, sink="keep")
    s = engine.causal.sink_chunks
    assert all(a is b for a, b in zip(kept.cache.sink, state.cache.sink)) and len(kept.cache.sink) == s
    assert not any(a is b for a, b in zip(kept.cache.window, state.cache.window))


def test_without_the_evicted_context_a_rolled_window_is_not_reproduced(parts):
    """``recache_context=False`` re-caches the window as if it followed the sink: exact before the window
    has rolled (chunk 2: nothing evicted yet), not after (chunk 4): the kept K/V are what makes it exact."""
    engine = _engine(parts, recache_context=False)
    plain, early, late = _run(engine, 6), _run(engine, 6, [(2, 0)]), _run(engine, 6, [(4, 0)])
    for a, b in zip(plain, early):
        torch.testing.assert_close(b.latents, a.latents, atol=1e-5, rtol=1e-5)
    assert (late[4].latents - plain[4].latents).abs().max() > 1e-4


def test_a_switch_leaves_the_old_state_as_it_was(parts):
    engine = _engine(parts)
    image, texts, lens, ids, source = _inputs(1)
    state = engine.start(image, texts[0], lens, track_ids=ids, seed=2)
    for i in range(4):
        _, state = engine.step(state, *source(i, engine.pixel_range(i)))
    first, _ = engine.step(state, *source(4, engine.pixel_range(4)))
    switched = engine.switch_prompt(state, texts[1], lens)
    other, _ = engine.step(switched, *source(4, engine.pixel_range(4)))
    again, _ = engine.step(state, *source(4, engine.pixel_range(4)))  # the state before the switch, replayed
    assert torch.equal(again.latents, first.latents) and not torch.equal(other.latents, first.latents)
    assert switched.chunk == state.chunk and switched.frames_out == state.frames_out


@pytest.mark.slow
def test_memory_stays_flat_with_switches(parts):
    engine = _engine(parts)
    plain, switched = [], []
    _run(engine, 14, states=plain)
    _run(engine, 14, [(4, 1), (7, 0), (11, 1)], states=switched)
    sizes = [state_nbytes(s) for s in switched]
    assert sizes == [state_nbytes(s) for s in plain]
    assert set(sizes[2:]) == {sizes[2]}  # from chunk 2 on (sink + full window + one evicted chunk): flat
    last = switched[-1]
    assert [h.index for h in last.held] == [0, 13] and [c.index for c in last.evicted] == [12]


@pytest.mark.parametrize("sink", ["recache", "keep"])
def test_a_switch_costs_one_pass_per_held_chunk_once(parts, monkeypatch, sink):
    calls = []
    real = chunks_module.stream_step
    monkeypatch.setattr(chunks_module, "stream_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    engine = _engine(parts, CONFIGS["c3s1w2"])  # sink 1 + window 2: three held chunks
    per_chunk, states = [], []
    image, texts, lens, ids, source = _inputs(1)
    state = engine.start(image, texts[0], lens, track_ids=ids)
    for i in range(7):
        if i == 4:
            before, n0 = state, len(calls)
            state = engine.switch_prompt(state, texts[1], lens, sink=sink)
            passes = len(calls) - n0
            assert passes == (3 if sink == "recache" else 2) == state.nfe - before.nfe
        n0 = len(calls)
        out, state = engine.step(state, *source(i, engine.pixel_range(i)))
        per_chunk.append(len(calls) - n0)
        states.append(state)
        assert out.nfe == per_chunk[-1]
    assert per_chunk == [1] + [3 + 1] * 6  # the chunks after the switch cost what the ones before did


def test_a_state_whose_held_inputs_disagree_with_its_cache_is_refused(parts):
    engine = _engine(parts)
    image, texts, lens, ids, source = _inputs(1)
    state = engine.start(image, texts[0], lens, track_ids=ids)
    for i in range(3):
        _, state = engine.step(state, *source(i, engine.pixel_range(i)))
    with pytest.raises(ValueError, match="re-cache a state the engine built"):
        engine.switch_prompt(replace(state, held=state.held[:1]), texts[1], lens)
    with pytest.raises(ValueError, match="sink='drop'"):
        engine.switch_prompt(state, texts[1], lens, sink="drop")


# -- the schedule file --------------------------------------------------------------------------------------

BAD_SCHEDULES = {  # file content -> (line, what the message says)
    "0\ta\n12 a dog\n": (2, "no tab"),
    "0\ta\nten\ta dog\n": (2, "'ten' is not an integer"),
    "-4\ta dog\n": (1, "frame -4 is negative"),
    "0\ta\n20\tb\n20\tc\n": (3, "frame 20 does not come after line 2's frame 20"),
    "0\ta\n\n30\tb\n13\tc\n": (4, "frames must increase"),
    "0\ta\n5\t   \n": (2, "empty prompt"),
}


@pytest.mark.parametrize("content", list(BAD_SCHEDULES))
def test_a_bad_schedule_line_is_one_line_naming_the_file_and_line(tmp_path, content):
    line, what = BAD_SCHEDULES[content]
    path = tmp_path / "s.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as err:
        read_prompt_schedule(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"--prompt-schedule {path}:{line}: ") and what in msg, msg


def test_schedule_frames_against_the_video(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("0\tun chat\n1\tle chat dort \u263e\n\n14\ta\tb\n", encoding="utf-8")
    switches = read_prompt_schedule(path)
    assert [(s.frame, s.prompt, s.line) for s in switches] == [
        (0, "un chat", 1),
        (1, "le chat dort \u263e", 2),
        (14, "a\tb", 4),
    ]
    placed = place_switches(switches, C3S1W1, 4, path)  # chunks start at frames 0, 1, 13, 25
    assert [s.chunk for s in placed] == [0, 1, 3]
    with pytest.raises(ValueError, match=r"s.txt:4: frame 14 is beyond the video \(3 chunks, frames 0-24"):
        place_switches(switches, C3S1W1, 3, path)
    path.write_text("2\ta\n13\tb\n", encoding="utf-8")  # both land on chunk 2
    with pytest.raises(ValueError, match=r"s.txt:2: frame 13 lands on chunk 2 \(frames 13-24\) like line 1"):
        place_switches(read_prompt_schedule(path), C3S1W1, 4, path)
    path.write_bytes(b"0\t\xff\xfe\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_prompt_schedule(path)
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no frame<TAB>prompt line"):
        read_prompt_schedule(path)
    with pytest.raises(ValueError, match="cannot be read"):
        read_prompt_schedule(tmp_path / "missing.txt")


# -- trackstream generate --prompt-schedule, the shipped tiny student on the CPU ----------------------------


@pytest.fixture
def cli_inputs(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "image.png"), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    np.save(tmp_path / "tracks.npy", (rng.random((49, 4, 2)) * 63).astype(np.float32))
    return tmp_path


def _generate(root: Path, out: str, *flags: str) -> int:
    from trackstream.cli import main

    args = ["generate", "--image", str(root / "image.png"), "--tracks", str(root / "tracks.npy")]
    return main([*args, "--out", str(root / out), "--device", "cpu", "--dtype", "float32", "--chunks", "4", *flags])


@pytest.mark.slow
def test_generate_with_a_prompt_schedule(cli_inputs, capsys, monkeypatch):
    import trackstream.data.video_io as video_io

    written = {}  # the frames handed to the mp4 writer (its x264 encode is not bit-reproducible run to run)
    real = video_io.write_mp4
    monkeypatch.setattr(
        video_io, "write_mp4", lambda p, f, **k: written.__setitem__(Path(p).stem, f) or real(p, f, **k)
    )
    root = cli_inputs
    (root / "start.txt").write_text("0\ta red ball\n", encoding="utf-8")
    (root / "switch.txt").write_text("0\ta red ball\n20\ta blue cube\n", encoding="utf-8")
    assert _generate(root, "prompt.mp4", "--prompt", "a red ball") == 0
    assert _generate(root, "start.mp4", "--prompt", "ignored", "--prompt-schedule", str(root / "start.txt")) == 0
    capsys.readouterr()
    assert _generate(root, "switch.mp4", "--prompt-schedule", str(root / "switch.txt")) == 0
    text = capsys.readouterr().out
    assert "prompt from frame 20 -> chunk 3 (frames 25-36): 'a blue cube'" in text
    assert "chunk    3: prompt switched, KV re-cache 2 passes" in text
    assert len(video_io.decode_video(str(root / "switch.mp4"))[0]) == 37  # 4 chunks: frames 0-36
    assert np.array_equal(written["prompt"], written["start"])  # a frame-0 line is --prompt
    assert np.array_equal(written["prompt"][:25], written["switch"][:25])  # chunks 0-2: before the switch
    assert len(written["switch"]) == 37  # chunk 3 (frames 25-36): after it
    assert np.abs(written["prompt"][25:].astype(int) - written["switch"][25:]).max() > 8
    # a bad file is refused before anything is streamed or written
    (root / "bad.txt").write_text("0\ta\n60\tb\n", encoding="utf-8")
    assert _generate(root, "bad.mp4", "--prompt-schedule", str(root / "bad.txt")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: --prompt-schedule {root / 'bad.txt'}:2: frame 60 is beyond the video (4 chunks, frames 0-36; "
        "the last chunk starts at frame 25): stream more chunks (--chunks) or drop it"
    ]
    assert not (root / "bad.mp4").exists()
