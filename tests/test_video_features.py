"""FVD's detector loads from a local TorchScript file with StyleGAN-V's call convention (checked on a
scripted stand-in with that signature: the real file cannot be fetched here), 16-frame protocol, clear
errors; the labelled codec proxy gives 0 for identical sets and grows with a corruption."""

import numpy as np
import pytest
import torch

from trackstream.eval.frechet import frechet_from_features
from trackstream.eval.video_features import codec_video_features, i3d_features, load_i3d
from trackstream.models.codecs import build_codec


class Detector(torch.nn.Module):
    """StyleGAN-V's signature: detector(videos [B, 3, T, H, W] 0..255, rescale, resize, return_features)."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 4, 400)

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        if rescale:
            x = x / 127.5 - 1
        if resize:
            x = torch.nn.functional.interpolate(x, size=(x.shape[2], 8, 8), mode="trilinear", align_corners=False)
        pooled = x.reshape(x.shape[0], 3, 4, x.shape[2] // 4, -1).mean(dim=(3, 4))  # [B, 3, 4]: 4 time bins
        return self.proj(pooled.flatten(1))


def test_i3d_detector_loads_with_jit_and_takes_the_first_16_frames(tmp_path, monkeypatch):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(Detector()), str(path))
    monkeypatch.delenv("TRACKSTREAM_ALLOW_PICKLE", raising=False)
    with pytest.raises(ValueError, match=r"TorchScript archive: loading it runs the code.*TRACKSTREAM_ALLOW_PICKLE=1"):
        load_i3d(path)  # no torch.jit.load without the explicit opt-in
    monkeypatch.setenv("TRACKSTREAM_ALLOW_PICKLE", "1")
    det = load_i3d(path)
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8) for _ in range(3)]
    f = i3d_features(det, videos, batch_size=2)
    assert f.shape == (3, 400) and f.dtype == np.float64
    cut = [v[:16] for v in videos]
    np.testing.assert_allclose(i3d_features(det, cut), f, atol=1e-6)  # frames after the 16th are not used
    with pytest.raises(ValueError, match="first 16 consecutive frames"):
        i3d_features(det, [videos[0][:10]])
    with pytest.raises(ValueError, match="i3d_torchscript.pt"):
        load_i3d(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    with pytest.raises(ValueError, match="not a TorchScript file"):
        load_i3d(tmp_path / "junk.pt")


@pytest.mark.slow
def test_codec_proxy_is_zero_for_identical_sets_and_grows_with_noise():
    torch.manual_seed(0)
    codec = build_codec("tiny-ae", width=8).eval()
    rng = np.random.default_rng(1)
    base = [np.repeat(rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8), 17, axis=0) for _ in range(12)]
    a = codec_video_features(codec, base)
    assert a.shape[0] == 12 and frechet_from_features(a, a) == pytest.approx(0.0, abs=1e-9)
    dist = []
    for std in (10, 40, 120):
        noisy = [np.clip(v + rng.normal(0, std, v.shape), 0, 255).astype(np.uint8) for v in base]
        dist.append(frechet_from_features(a, codec_video_features(codec, noisy)))
    assert dist[0] < dist[1] < dist[2]
