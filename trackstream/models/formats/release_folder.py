"""Wan release folders as users download them: find each part by its official name, else by its keys.

An official Wan 2.1 / Fun release folder (as downloaded from the Wan-AI / alibaba-pai model pages) holds, side by side:
  DiT      config.json + diffusion_pytorch_model.safetensors, or shards + *.safetensors.index.json
  VAE      Wan2.1_VAE.pth (Wan 2.2 TI2V-5B: Wan2.2_VAE.pth, 48 latent channels; ``vae_version`` tells them apart)
  T5       models_t5_umt5-xxl-enc-bf16.pth + the tokenizer folder google/umt5-xxl/
  CLIP     models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth (+ xlm-roberta-large/, unused)
A ``.pth`` with another name is classified by its keys (``visual.*`` CLIP, ``token_embedding`` T5,
``encoder.``/``decoder.`` VAE, ``patch_embedding`` + ``blocks.`` DiT). ``find_release`` never loads
tensors: safetensors headers and torch's zip index (``mmap``) are enough. ``ReleaseFolder.require``
raises a ``ValueError`` that lists what was found and what is missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from trackstream.models.formats.files import read_torch_file

__all__ = ["OFFICIAL_FILES", "ReleaseFolder", "find_release", "is_release_folder", "classify_weights", "vae_version"]

OFFICIAL_FILES = {
    "vae": ("Wan2.1_VAE.pth", "Wan2.2_VAE.pth"),
    "t5": ("models_t5_umt5-xxl-enc-bf16.pth",),
    "clip": ("models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",),
}
TOKENIZER_DIRS = {"t5_tokenizer": ("google/umt5-xxl",), "clip_tokenizer": ("xlm-roberta-large",)}
PARTS = ("dit", "vae", "t5", "t5_tokenizer", "clip")


def _keys(path: Path) -> list[str]:
    """The tensor names of a weight file without reading its tensors."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    obj = read_torch_file(path, mmap=True, fix="download it again, or move it out of the release folder")
    return list(obj.keys()) if isinstance(obj, dict) else []


def classify_weights(path: Path) -> Optional[str]:
    """ "clip", "t5", "vae", "dit" or None, from the keys of one weight file."""
    keys = _keys(path)
    if any(k.startswith("visual.") for k in keys):
        return "clip"
    if "token_embedding.weight" in keys and any(k.startswith("blocks.") for k in keys):
        return "t5"
    if any(k.startswith("encoder.") for k in keys) and any(k.startswith("decoder.") for k in keys):
        return "vae"
    if any(k.endswith("patch_embedding.weight") for k in keys) and any(".blocks." in f".{k}" for k in keys):
        return "dit"
    return None


def vae_version(path: str | Path) -> Optional[str]:
    """ "2.1" or "2.2" for an official-layout VAE file (keys only, no tensors read), None for no VAE.

    The 2.2 VAE nests its blocks one level deeper (``decoder.upsamples.0.upsamples.0.residual...``,
    ``encoder.downsamples.0.downsamples.0...``), the 2.1 one indexes them flat (``decoder.upsamples.3...``);
    ComfyUI tells the two apart by the same nesting.
    """
    keys = _keys(Path(path))
    if not (any(k.startswith("encoder.") for k in keys) and any(k.startswith("decoder.") for k in keys)):
        return None
    nested = re.compile(r"(encoder\.downsamples\.\d+\.downsamples|decoder\.upsamples\.\d+\.upsamples)\.\d+\.")
    return "2.2" if any(nested.match(k) for k in keys) else "2.1"


@dataclass
class ReleaseFolder:
    """Where each part of a release lives (None: not in this folder)."""

    root: Path
    dit: list[Path] = field(default_factory=list)  # the DiT's files: an index json, or one safetensors
    dit_config: Optional[Path] = None
    vae: Optional[Path] = None
    t5: Optional[Path] = None
    t5_tokenizer: Optional[Path] = None
    clip: Optional[Path] = None
    unknown: list[Path] = field(default_factory=list)  # weight files of no recognised kind

    def found(self) -> dict[str, str]:
        """Each part that is present -> its path(s) relative to the folder (for error messages)."""
        out = {}
        for part in PARTS:
            paths = self.dit if part == "dit" else [getattr(self, part)] if getattr(self, part) else []
            if paths:
                out[part] = ", ".join(str(x.relative_to(self.root)) for x in paths)
        return out

    def require(self, *parts: str, field_name: str = "path") -> "ReleaseFolder":
        missing = [p for p in parts if not (self.dit if p == "dit" else getattr(self, p))]
        if missing:
            expected = {
                p: OFFICIAL_FILES.get(p) or TOKENIZER_DIRS.get(p) or ("*.safetensors (+ index json)",) for p in missing
            }
            raise ValueError(
                f"{field_name}={str(self.root)!r}: release folder without {missing}; expected "
                f"{expected}; found {self.found() or 'nothing recognisable'}"
                + (f"; unrecognised weight files {[x.name for x in self.unknown]}" if self.unknown else "")
            )
        return self


def is_release_folder(folder: Path) -> bool:
    """A folder that holds official auxiliary files (.pth of VAE / T5 / CLIP) next to the DiT."""
    folder = Path(folder)
    return folder.is_dir() and any(folder.glob("*.pth"))


def find_release(folder: str | Path) -> ReleaseFolder:
    """Classify a release folder's files (see the module docstring); ambiguity raises ValueError."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"release folder {root} does not exist or is not a folder")
    rel = ReleaseFolder(root=root)
    rel.t5_tokenizer = next((root / d for d in TOKENIZER_DIRS["t5_tokenizer"] if (root / d).is_dir()), None)
    indexes = sorted(root.glob("*.safetensors.index.json"))
    if len(indexes) > 1:
        raise ValueError(f"release folder {root} has several DiT index files {[i.name for i in indexes]}; keep one")
    if indexes:
        rel.dit = indexes
    by_kind: dict[str, list[Path]] = {}
    for path in sorted(root.glob("*.pth")) + ([] if indexes else sorted(root.glob("*.safetensors"))):
        official = next((k for k, names in OFFICIAL_FILES.items() if path.name in names), None)
        kind = official or classify_weights(path)
        if kind is None:
            rel.unknown.append(path)
        else:
            by_kind.setdefault(kind, []).append(path)
    for kind, paths in by_kind.items():
        if len(paths) > 1:
            raise ValueError(
                f"release folder {root} has several {kind} files {[p.name for p in paths]}; "
                "keep one or point at the file itself"
            )
        if kind == "dit":
            rel.dit = paths
        else:
            setattr(rel, kind, paths[0])
    if (root / "config.json").is_file():
        rel.dit_config = root / "config.json"
    return rel
