"""Export a causal student as a diffusers pipeline folder that streams (``stream.diffusers_pipeline``).

    trackstream export --network runs/x/export/student --format pipeline --codec CODEC [--codec-name NAME] --out DIR

    pipe = diffusers.DiffusionPipeline.from_pretrained(DIR, trust_remote_code=True)

The folder (docs/diffusers.md):

    model_index.json           _class_name ["trackstream_pipeline", "TrackStreamPipeline"] + one entry per part
    trackstream_pipeline.py    remote code: re-exports the pipeline class of the installed trackstream package
    transformer/               the export as trackstream writes it (network.json, dit/, heads.pt)
    vae/                       the codec's weights (config.json names the codec)
    text_encoder/              the text encoder's files under weights/ (none when its default is its package's)
    image_encoder/             the CLIP image encoder (only for networks with the I2V image branch)
    scheduler/                 FlowMatchEulerDiscreteScheduler with the student's shift (a record: the steps
                               come from network.json's conventions)

Every part folder but the scheduler has ``config.json`` and ``trackstream_components.py`` (remote code: the
component classes of ``stream.diffusers_components``, which diffusers only looks for in the part's folder).
Why the parts are trackstream's own files rather than diffusers' (``--format diffusers``): the pipeline runs
trackstream's streaming engine, which loads exactly these (``models.conditioner``), so the frames are
``trackstream generate``'s.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

__all__ = ["export_pipeline", "PIPELINE_FILE"]

PIPELINE_FILE = "trackstream_pipeline"
_PIPELINE_SHIM = '''"""Remote code of a TrackStream pipeline folder: the class lives in the installed trackstream package."""

from trackstream.stream.diffusers_pipeline import TrackStreamPipeline  # noqa: F401
'''
_COMPONENTS_SHIM = '''"""Remote code of a TrackStream pipeline part: the classes live in the installed trackstream package."""

from trackstream.stream.diffusers_components import (  # noqa: F401
    TrackStreamCodec,
    TrackStreamImageEncoder,
    TrackStreamTextEncoder,
    TrackStreamTransformer,
)
'''


def _part(root: Path, name: str, cls: str, info: dict) -> list[str]:
    """A component folder's config.json and remote-code file; its ``model_index.json`` entry."""
    from diffusers import __version__

    from trackstream.stream.diffusers_components import COMPONENT_FILE

    folder = root / name
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps({"_class_name": cls, "_diffusers_version": __version__, **info}, indent=2)
    )
    (folder / f"{COMPONENT_FILE}.py").write_text(_COMPONENTS_SHIM)
    return [COMPONENT_FILE, cls]


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)


def _text_encoder(root: Path, model: dict) -> list[str]:
    """The text encoder's files: a Wan release folder's umT5 .pth + tokenizer (keeping their names, so the copy
    is read as a release folder too), a transformers folder as is, nothing for the encoder's packaged default."""
    from trackstream.models.formats.release_folder import find_release, is_release_folder

    path, weights = model.get("text_encoder_path"), None
    if path:
        path, weights = Path(path), "weights"
        if not path.exists():
            raise ValueError(f"--network: model.text_encoder_path={str(path)!r} does not exist: fix network.json")
        if is_release_folder(path):
            rel = find_release(path).require("t5", "t5_tokenizer", field_name="model.text_encoder_path")
            _copy(rel.t5, root / "text_encoder" / weights / rel.t5.name)
            _copy(rel.t5_tokenizer, root / "text_encoder" / weights / rel.t5_tokenizer.relative_to(rel.root))
        else:
            _copy(path, root / "text_encoder" / weights)
            own = any((path / f).is_file() for f in ("tokenizer.json", "spiece.model", "tokenizer_config.json"))
            if not own and (path.parent / "tokenizer").is_dir():  # a diffusers bundle's: beside, where it is read
                _copy(path.parent / "tokenizer", root / "text_encoder" / "tokenizer")
    return _part(root, "text_encoder", "TrackStreamTextEncoder", {"name": model["text_encoder"], "weights": weights})


def _image_encoder(root: Path, model: dict) -> list:
    """The CLIP image encoder where the network has the image branch fed by CLIP; else ``[None, None]``."""
    from trackstream.models.formats.release_folder import find_release, is_release_folder
    from trackstream.models.motion_wan import ModelConfig

    if ModelConfig(**model).image_feature_mode != "clip":
        return [None, None]
    path = Path(model.get("image_encoder_path") or "")
    if not model.get("image_encoder_path") or not path.exists():
        raise ValueError(f"--network: model.image_encoder_path={model.get('image_encoder_path')!r} is needed (CLIP)")
    if is_release_folder(path):
        path = find_release(path).require("clip", field_name="model.image_encoder_path").clip
    weights = path.name if path.is_file() else "weights"
    _copy(path, root / "image_encoder" / weights)
    info = {"weights": weights}
    if model.get("image_processor"):  # the CLIPImageProcessor that prepares its pixels travels with it
        _copy(Path(model["image_processor"]), root / "image_encoder" / "processor")
        info["processor"] = "processor"
    return _part(root, "image_encoder", "TrackStreamImageEncoder", info)


def _write(root: Path, folder: Path, meta: dict, codec_name: str, codec: str) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, __version__

    model, causal = meta["model"], meta["conventions"]["causal"]
    if (folder / "network.json").is_file():
        shutil.copytree(folder, root / "transformer")
    else:  # a WanTrack bundle: its network alone, as an export (its encoders and VAE get their own parts below)
        from trackstream.pipeline.export_folder import write_export

        write_export(folder, root / "transformer")
    index = {"_class_name": [PIPELINE_FILE, "TrackStreamPipeline"], "_diffusers_version": __version__}
    index["transformer"] = _part(root, "transformer", "TrackStreamTransformer", {"source": str(folder)})
    _copy(Path(codec), root / "vae" / Path(codec).name)
    index["vae"] = _part(root, "vae", "TrackStreamCodec", {"codec_name": codec_name, "weights": Path(codec).name})
    index["text_encoder"] = _text_encoder(root, model)
    index["image_encoder"] = _image_encoder(root, model)
    # a record of the student's sigma schedule for diffusers tools; the engine takes its steps from network.json
    FlowMatchEulerDiscreteScheduler(shift=float(causal.get("shift", 3.0))).save_config(root / "scheduler")
    index["scheduler"] = ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    (root / f"{PIPELINE_FILE}.py").write_text(_PIPELINE_SHIM)
    (root / "model_index.json").write_text(json.dumps(index, indent=2))


def export_pipeline(
    network: str | os.PathLike,
    out: str | os.PathLike,
    *,
    codec: str | os.PathLike | None = None,
    codec_name: str | None = None,
) -> Path:
    """Write the student ``network`` (a folder ``models.network.Network`` opens: an export, a run directory, a
    release folder, a FastVideo WanTrack bundle) with its codec (the one its folder records; ``codec`` /
    ``codec_name``: another checkpoint, as ``--codec`` of ``trackstream generate``) to ``out`` as a diffusers
    pipeline folder. ``out`` must not hold anything yet; it is written aside and renamed, so it is never half a
    pipeline."""
    from trackstream.models.network import Network

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty folder: pick a new folder or remove it")
    opened = Network.open(network, "--network")
    ref = opened.codec_for(codec_name, None if codec is None else str(codec), field="--codec")
    folder, meta = opened.folder, opened.meta
    if not (meta.get("conventions") or {}).get("causal"):
        raise ValueError(
            f"--network {folder} records no streaming configuration (conventions.causal): a teacher? a pipeline "
            "streams a student: export one with the ODE-init or DMD stage"
        )
    codec_name, resolved = ref.name, ref.checkpoint
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write(tmp, folder, meta, codec_name, resolved)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
