"""lab/gpu_generate.py's CPU rehearsal: the realtime bench's wan1.3b-480p-taehv setup with a shrunk DiT and
frame, timed through the real ``trackstream generate`` (a subprocess) and the exported diffusers pipeline."""

import json

import pytest

pytest.importorskip("diffusers")


@pytest.mark.slow
def test_the_rehearsal_times_generate_and_the_pipeline_over_every_chunk(tmp_path, forked_launches):
    from lab.gpu_generate import main

    argv = ["--out", tmp_path, "--device", "cpu", "--dim", 64, "--num-layers", 2, "--num-heads", 2, "--ffn-dim", 128]
    argv += ["--height", 64, "--width", 112, "--chunks", 7, "--tracks", 20]
    main([str(a) for a in argv])
    r = json.loads((tmp_path / "generate_timing.json").read_text())
    assert r["meta"]["setup"] == "wan1.3b-480p-taehv" and r["meta"]["dtype"] == "float32"
    # the student streams the recipe's chunking and steps (c3s1w1, 3 steps + the commit pass)
    assert r["meta"]["stream"] == {
        "chunk_frames": 3,
        "sink_chunks": 1,
        "window_chunks": 1,
        "first_chunk_frames": None,
        "steps": 3,
        "shift": 6.0,
    }
    g, p = r["generate"], r["pipeline"]
    assert g["rc"] == 0 and g["error"] is None and g["own_frames_per_s"] > 0
    for path in (g, p):
        assert [c["index"] for c in path["chunks"]] == list(range(7))
        assert all(c["ms"] > 0 and c["frames"] in (9, 12) for c in path["chunks"])  # chunk 0: 9 frames, then 12
        assert path["window"] == [5, 7] and path["frames"] == 36
        assert path["frames_per_s"] > 0 and path["frames_per_s_chunk_ms"] > 0
    assert (tmp_path / "gen.mp4").stat().st_size > 0
