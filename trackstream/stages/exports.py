"""An exported network folder opened once for every stage part that needs it (``NetworkExport``): its
network.json (architecture, text width, conventions), the frozen codec of its latent space, the checks a
stage's config must pass against it, and the student export written in its format.

The codec must be the teacher's (its latent space): ``codec.checkpoint``, a released codec, or the
``codec/codec.pt`` of the teacher's run directory when the folder is ``<teacher_run>/export/teacher``; a
student's is its teacher's, named by the student's run config (``stage.teacher``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from trackstream.models.conditioner import Conditioner
from trackstream.models.motion_wan import Conventions, ModelConfig, read_network_json
from trackstream.models.streaming import StreamConfig
from trackstream.stream.chunks import first_chunk_given
from trackstream.train.dist import Runtime
from trackstream.train.parallel import prepare_frozen
from trackstream.train.weights import export_network

if TYPE_CHECKING:
    from trackstream.stages.config import TrainConfig

__all__ = ["NetworkExport"]

log = logging.getLogger(__name__)


class NetworkExport:
    """The exported network folder ``field`` names (a teacher, or the student RL starts from); unset, or a
    folder without network.json, is a one-line ValueError."""

    def __init__(self, path: str | None, field: str = "stage.teacher"):
        if not path:
            raise ValueError(f"{field} is not set: give the exported teacher folder (<teacher_run>/export/teacher)")
        self.dir, self.field = Path(path), field
        if not (self.dir / "network.json").is_file():
            raise ValueError(
                f"{field}={path!r} is not an exported network folder (no network.json); see train.weights.export_network"
            )
        self.meta = read_network_json(self.dir)
        self._codec = None

    @property
    def model(self) -> ModelConfig:
        return ModelConfig(**self.meta["model"])

    @property
    def text_dim(self) -> int:
        return int(self.meta["text_encoder_dim"])

    @functools.cached_property
    def conventions(self) -> Conventions:
        return Conventions.from_dict(self.meta.get("conventions", {}), source=str(self.dir / "network.json"))

    def _run_config(self, *, resolve: bool) -> dict | None:
        """The config of the run that exported the folder (``<run>/export/<name>``), if it is there."""
        from omegaconf import OmegaConf

        path = self.dir.parents[1] / "config.yaml" if len(self.dir.parents) > 1 else None
        return OmegaConf.to_container(OmegaConf.load(path), resolve=resolve) if path and path.is_file() else None

    def codec(self, cfg: "TrainConfig", runtime: Runtime) -> torch.nn.Module:
        """The frozen codec of the network's latent space (never a freshly fitted one), loaded once."""
        if self._codec is None:
            self._codec = prepare_frozen(runtime, self._load_codec(cfg))
        return self._codec

    def _load_codec(self, cfg: "TrainConfig") -> torch.nn.Module:
        from trackstream.train.codec import TRAINABLE, build_codec_module, load_codec_file

        if cfg.codec.checkpoint or cfg.codec.name not in TRAINABLE:
            return build_codec_module(cfg.codec)
        if self.field == "stage.student":  # a student works in its teacher's latent space
            teacher = ((self._run_config(resolve=False) or {}).get("stage") or {}).get("teacher")
            if not teacher:
                raise ValueError(
                    f"codec.checkpoint is not set and {self.dir} is not in a run directory naming its teacher: "
                    "pass the teacher's codec (codec.checkpoint=<teacher_run>/codec/codec.pt)"
                )
            return NetworkExport(teacher)._load_codec(cfg)
        guess = self.dir.parents[1] / "codec" / "codec.pt"
        if guess.is_file():
            return load_codec_file(cfg.codec, guess)
        # a student exported as a teacher (teacher forcing's autoregressive teacher): its own teacher's codec
        teacher = ((self._run_config(resolve=False) or {}).get("stage") or {}).get("teacher")
        if teacher:
            return NetworkExport(teacher)._load_codec(cfg)
        raise ValueError(
            f"codec.checkpoint is not set and {guess} does not exist: pass the teacher's codec "
            "(codec.checkpoint=<teacher_run>/codec/codec.pt)"
        )

    def conditioner(self, cfg: "TrainConfig", runtime: Runtime, text_encoder) -> Conditioner:
        """The frozen encoders (codec, text, image features) of this network: conditions rendered for it."""
        return Conditioner.for_network(
            self.model, codec=self.codec(cfg, runtime), text_encoder=text_encoder, device=runtime.device
        )

    def check_teacher_of(self, cfg: "TrainConfig") -> None:
        """A stage distilling this teacher must use its step grid, frame size and text encoder.

        The export holds the architecture (network.json) but not the schedule or the data: when the
        teacher folder sits in its run directory (``<run>/export/teacher``), ``<run>/config.yaml`` is
        compared, and for a shipped folder (``assets/tiny-teacher/teacher``) the ``config.yaml`` beside it. A different shift or frame size is an error; a different synthetic world only a
        warning (the conditions are then out of the teacher's training distribution)."""
        meta = self.meta["model"]
        want = getattr(cfg.stage, "teacher_flavor", None)
        if want and meta["flavor"] != want:
            raise ValueError(
                f"stage.teacher={self.dir} is a {meta['flavor']!r} network but this recipe distils from a {want!r} "
                f"(stage.teacher_flavor): give that teacher's export, or set stage.teacher_flavor={meta['flavor']}"
            )
        if cfg.model.text_encoder != meta["text_encoder"]:
            raise ValueError(
                f"model.text_encoder={cfg.model.text_encoder!r} but the teacher was trained with "
                f"{meta['text_encoder']!r}: set model.text_encoder={meta['text_encoder']}"
            )
        run, recorded = self._run_config(resolve=True), self.dir.parents[1] / "config.yaml"
        if run is None and (self.dir.parent / "config.yaml").is_file():  # a shipped folder: <folder>/teacher beside it
            from omegaconf import OmegaConf

            recorded = self.dir.parent / "config.yaml"
            run = OmegaConf.to_container(OmegaConf.load(recorded), resolve=True)
        if run is None:
            return
        errors = []
        if abs(float(run["schedule"]["shift"]) - cfg.schedule.shift) > 1e-9:
            errors.append(f"schedule.shift={cfg.schedule.shift} (teacher: {run['schedule']['shift']})")
        for key in ("height", "width"):
            if int(run["data"][key]) != getattr(cfg.data, key):
                errors.append(f"data.{key}={getattr(cfg.data, key)} (teacher: {run['data'][key]})")
        if errors:
            raise ValueError(
                f"this stage does not match the teacher run {recorded}: {', '.join(errors)}; pass the teacher's "
                f"values (settings_from={recorded.parent} on the command line gives them all)"
            )
        for key in ("world", "fps", "grid_size"):
            if run["data"].get(key) != getattr(cfg.data, key):
                log.warning(
                    "data.%s=%s differs from the teacher run's %s: conditions are off the teacher's training distribution",
                    key,
                    getattr(cfg.data, key),
                    run["data"].get(key),
                )

    def check_streams_as(self, cfg: "TrainConfig") -> None:
        """A stage rolling this student out must stream it as it was exported: its recorded chunking, steps
        and shift (an export from before streaming conventions were recorded: the config decides)."""
        s = self.conventions.streaming
        if s is None:
            return
        errors = []
        if s.causal != cfg.stage.causal:
            errors.append(f"stage.causal={cfg.stage.causal} (student: {s.causal})")
        if s.steps != cfg.schedule.student_steps:
            errors.append(f"schedule.student_steps={cfg.schedule.student_steps} (student: {s.steps})")
        if abs(s.shift - cfg.schedule.shift) > 1e-9:
            errors.append(f"schedule.shift={cfg.schedule.shift} (student: {s.shift})")
        if errors:
            raise ValueError(f"the student {self.dir} streams differently: {', '.join(errors)}; pass its values")

    def export_student(self, trained, run_dir: Path, runtime: Runtime, cfg: "TrainConfig", *, model=None) -> Path:
        """The student in this network's format; network.json records how it streams (chunking, steps,
        shift). ``model``: the student's network.json "model" when it is not this architecture (another size)."""
        # a given chunk 0 is the clean first frame at t = 0; a sampled one keeps the teacher's convention
        clean_first = self.conventions.clean_first_frame or first_chunk_given(cfg.stage.causal)
        conventions = dataclasses.replace(
            self.conventions,
            clean_first_frame=clean_first,
            streaming=StreamConfig(causal=cfg.stage.causal, steps=cfg.schedule.student_steps, shift=cfg.schedule.shift),
        )
        return export_network(
            trained,
            run_dir / "export" / "student",
            model_cfg=model or self.meta["model"],
            runtime=runtime,
            text_encoder_dim=self.text_dim,
            conventions=conventions,
        )
