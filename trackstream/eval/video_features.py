"""Video feature networks for the Fréchet video distances (trackstream/eval/frechet.py).

* FVD: the I3D TorchScript detector of StyleGAN-V (``i3d_torchscript.pt``, a port verified against
  TF-hub's i3d-kinetics-400, the detector published FVDs use), loaded from a local file with
  ``torch.jit.load``. Protocol (StyleGAN-V ``fvd2048_16f``): the first 16 consecutive frames of each
  video, uint8 values as float 0..255 in [B, 3, T, H, W], ``detector(x, rescale=True, resize=True,
  return_features=True)`` (the detector resizes to 224x224 and rescales to [-1, 1] itself) -> the
  400-d logits averaged over time. The feature width is read from the output, not assumed.
* A labelled proxy where no I3D file exists (the embedded synthetic world): the same Fréchet
  distance on features of the run's own trained codec (its encoder's latents, per channel mean and
  standard deviation over space, for each latent frame of the 16-frame clip). It is reported as
  ``proxy_fvd_codec``, never as FVD: its scale has nothing to do with published FVDs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trackstream.data.video_io import video_tensor
from trackstream.models.formats.files import read_torchscript

__all__ = ["FVD_FRAMES", "load_i3d", "i3d_features", "codec_video_features"]

FVD_FRAMES = 16
I3D_FILE = "i3d_torchscript.pt"


def load_i3d(path: str | Path, *, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """StyleGAN-V's I3D TorchScript detector from a local file (nothing is downloaded)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"FVD needs StyleGAN-V's I3D detector {I3D_FILE} (published at "
            f"dropbox.com/s/ge9e5ujwgetktms); {path} does not exist. Download it ahead of time and "
            "pass its path (eval.fvd.detector=...): nothing is downloaded here"
        )
    try:
        detector = read_torchscript(path, what=f"FVD's I3D detector ({I3D_FILE})", map_location=device)
    except RuntimeError as err:
        raise ValueError(f"{path} is not a TorchScript file ({err}); FVD needs StyleGAN-V's {I3D_FILE}") from err
    return detector.eval()


def _clips(videos, frames: int) -> list[np.ndarray]:
    out = []
    for i, v in enumerate(videos):
        v = np.asarray(v)
        if v.ndim != 4 or v.shape[-1] != 3 or v.dtype != np.uint8:
            raise ValueError(f"video {i}: expected uint8 [T, H, W, 3] frames, got {v.dtype} {v.shape}")
        if v.shape[0] < frames:
            raise ValueError(
                f"video {i} has {v.shape[0]} frames; the protocol takes the first {frames} "
                "consecutive frames: generate longer videos"
            )
        out.append(v[:frames])
    return out


@torch.no_grad()
def i3d_features(
    detector, videos, *, frames: int = FVD_FRAMES, batch_size: int = 8, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Videos (uint8 [T, H, W, 3] each, at least ``frames`` long) -> I3D features [N, D] float64."""
    clips = _clips(videos, frames)
    feats = []
    for start in range(0, len(clips), batch_size):
        x = torch.from_numpy(np.stack(clips[start : start + batch_size])).to(device)  # [B, T, H, W, 3]
        x = x.permute(0, 4, 1, 2, 3).float()  # [B, 3, T, H, W], values 0..255
        out = detector(x, rescale=True, resize=True, return_features=True)
        feats.append(out.reshape(out.shape[0], -1).double().cpu().numpy())
    return np.concatenate(feats)


@torch.no_grad()
def codec_video_features(codec, videos, *, frames: int = FVD_FRAMES + 1, batch_size: int = 8) -> np.ndarray:
    """The proxy's features: the codec's latents of the first ``frames`` frames (1 + 4k, 17 by default:
    16 frames after the first, 5 latent frames) -> per latent frame and channel, the mean and the
    standard deviation over space, flattened: [N, 2 * C * F] float64."""
    if (frames - 1) % 4:
        raise ValueError(f"codec features need 1 + 4k frames, got {frames}")
    clips = _clips(videos, frames)
    device = next(codec.parameters()).device
    feats = []
    for start in range(0, len(clips), batch_size):
        x = video_tensor(torch.from_numpy(np.stack(clips[start : start + batch_size])).to(device))  # [B, 3, T, H, W]
        z = codec.encode(x).float()  # [B, C, F, h, w]
        stats = torch.cat([z.mean(dim=(3, 4)), z.std(dim=(3, 4))], dim=1)  # [B, 2C, F]
        feats.append(stats.flatten(1).double().cpu().numpy())
    return np.concatenate(feats)
