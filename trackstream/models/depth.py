"""Depth for camera control: a depth map from a file, or from a local monocular depth model.

* ``read_depth(path)``: ``.npy`` [H, W] (depth along the optical axis, any positive unit), or a 16-bit PNG
  (depth in millimetres, the common RGB-D convention; 0 = unknown, filled from the nearest known pixel).
* ``estimate_depth(image, model_dir)``: a ``transformers`` depth-estimation folder (Depth Anything, DPT: the
  ``save_pretrained`` layout with ``config.json``, the weights and the image processor's
  ``preprocessor_config.json``), loaded locally (nothing is downloaded). Those models predict relative
  inverse depth (disparity); it is turned into depth as 1 / max(disparity / its maximum, 0.05): relative depth
  in [1, 20]. The camera paths scale with the scene's median depth, so the unknown scale cancels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["read_depth", "estimate_depth", "disparity_to_depth", "DepthModel"]


def read_depth(path: str | Path) -> np.ndarray:
    """A depth map file -> float64 [H, W] > 0 (module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--depth {path} does not exist: give a .npy depth map or a 16-bit PNG (millimetres)")
    if p.suffix == ".npy":
        try:
            depth = np.load(p, allow_pickle=False).astype(float)
        except (ValueError, OSError) as err:
            raise ValueError(f"--depth {path} is not a readable .npy array ({err})") from None
    else:
        import cv2

        raw = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.ndim != 2:
            raise ValueError(f"--depth {path}: not a one-channel (16-bit) PNG depth map")
        depth = raw.astype(float) / 1000.0
    if depth.ndim != 2 or not np.isfinite(depth).all():
        raise ValueError(f"--depth {path}: expected a finite [H, W] map, got shape {depth.shape}")
    if not (depth > 0).any():
        raise ValueError(f"--depth {path}: no positive depth at all")
    if not (depth > 0).all():  # holes (0 = unknown): the nearest known depth
        import cv2

        holes = (depth <= 0).astype(np.uint8)
        _, labels = cv2.distanceTransformWithLabels(holes, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        known = np.zeros(labels.max() + 1)
        known[labels[holes == 0]] = depth[holes == 0]
        depth = known[labels]
    return depth


def disparity_to_depth(disparity: np.ndarray, floor: float = 0.05) -> np.ndarray:
    """Relative inverse depth -> relative depth in [1, 1 / floor]."""
    d = np.asarray(disparity, float)
    top = d.max()
    if not np.isfinite(top) or top <= 0:
        raise ValueError("the depth model predicted no positive disparity: is the model folder a depth model?")
    return 1.0 / np.clip(d / top, floor, None)


class DepthModel:
    """A local transformers depth-estimation folder, loaded once: ``model(image)`` -> relative depth [H, W]
    (module docstring). The demo keeps one per server; ``estimate_depth`` loads one for a single image."""

    def __init__(self, model_dir: str | Path, *, device: str | torch.device = "cpu"):
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        folder = Path(model_dir)
        if not (folder / "config.json").is_file():
            raise ValueError(
                f"--depth-model {model_dir}: not a transformers model folder (no config.json); save one with "
                "save_pretrained (e.g. depth-anything/Depth-Anything-V2-Small-hf, downloaded ahead of time)"
            )
        self.device = torch.device(device)
        self.processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        self.model = AutoModelForDepthEstimation.from_pretrained(folder, local_files_only=True).to(self.device).eval()

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        """uint8 RGB [H, W, 3] -> relative depth [H, W]."""
        inputs = self.processor(images=image, return_tensors="pt").to(self.device)
        pred = self.model(**inputs).predicted_depth  # [1, h, w] relative disparity
        H, W = image.shape[:2]
        pred = torch.nn.functional.interpolate(pred[:, None].float(), size=(H, W), mode="bicubic", align_corners=False)
        return disparity_to_depth(pred[0, 0].cpu().numpy())


def estimate_depth(image: np.ndarray, model_dir: str | Path, *, device: str | torch.device = "cpu") -> np.ndarray:
    """uint8 RGB [H, W, 3] -> relative depth [H, W] from a local transformers depth model (module docstring)."""
    return DepthModel(model_dir, device=device)(image)
