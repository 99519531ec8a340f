"""An exported network folder opened once for every stage part that needs it (``NetworkExport``): its
network.json (architecture, text width, conventions), the frozen codec of its latent space, the checks a
stage's config must pass against it, and the student export written in its format.

The codec must be the network's (its latent space): ``codec.checkpoint`` (which a stage given the network reads
from its record: ``train.teacher_record``), else the one recorded with the folder (a release's ``codec.pt``,
its run's ``codec/codec.pt`` or the codec its run's config names, else its own teacher's).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from trackstream.models.conditioner import Conditioner
from trackstream.models.motion_wan import Conventions, ModelConfig
from trackstream.models.network import Network
from trackstream.models.streaming import StreamConfig, first_chunk_given
from trackstream.trainer.codec import CodecConfig
from trackstream.trainer.dist import Runtime
from trackstream.trainer.parallel import prepare_frozen
from trackstream.trainer.weights import export_network

__all__ = ["NetworkExport"]


class NetworkExport:
    """The exported network folder ``field`` names (a teacher, or the student RL starts from); unset, or a
    folder without network.json, is a one-line ValueError."""

    def __init__(self, path: str | None, field: str = "stage.teacher"):
        if not path:
            raise ValueError(f"{field} is not set: give the exported teacher folder (<teacher_run>/export/teacher)")
        self.network = Network.open(path, field)  # an export, a run or release folder, FastVideo's WanTrack bundle
        self.dir, self.field = self.network.folder, field
        self.meta = self.network.meta
        self._codec = None

    @property
    def model(self) -> ModelConfig:
        return self.network.model

    @property
    def text_dim(self) -> int:
        return self.network.text_dim

    @property
    def conventions(self) -> Conventions:
        return self.network.conventions

    def codec(self, codec: CodecConfig, runtime: Runtime) -> torch.nn.Module:
        """The frozen codec of the network's latent space (never a freshly fitted one), loaded once: ``codec``
        (the run's) when it names a checkpoint or an untrainable codec, else the one recorded with the folder."""
        if self._codec is None:
            self._codec = prepare_frozen(runtime, self._load_codec(codec))
        return self._codec

    def _load_codec(self, codec: CodecConfig) -> torch.nn.Module:
        from trackstream.trainer.codec import TRAINABLE, build_codec_module, load_codec_file

        if codec.checkpoint or codec.name not in TRAINABLE:
            return build_codec_module(codec)
        if self.network.codec_file is None:
            raise ValueError(
                f"codec.checkpoint is not set and no codec is recorded with {self.field}={self.dir}: pass the "
                "codec its network works in (codec.checkpoint=<teacher_run>/codec/codec.pt)"
            )
        return load_codec_file(codec, self.network.codec_file)

    def conditioner(self, codec: CodecConfig, runtime: Runtime, text_encoder) -> Conditioner:
        """The frozen encoders (codec, text, image features) of this network: conditions rendered for it."""
        return Conditioner.for_network(
            self.model, codec=self.codec(codec, runtime), text_encoder=text_encoder, device=runtime.device
        )

    def check_teacher_of(self, text_encoder: str, *, flavor: str | None = None) -> None:
        """A stage distilling this teacher must use its text encoder (``model.text_encoder``) and its flavor
        (``stage.teacher_flavor``, when the recipe names one). Its other settings are the teacher's already: read
        from its record (``train.teacher_record``)."""
        meta = self.meta["model"]
        if flavor and meta["flavor"] != flavor:
            raise ValueError(
                f"stage.teacher={self.dir} is a {meta['flavor']!r} network but this recipe distils from a {flavor!r} "
                f"(stage.teacher_flavor): give that teacher's export, or set stage.teacher_flavor={meta['flavor']}"
            )
        if text_encoder != meta["text_encoder"]:
            raise ValueError(
                f"model.text_encoder={text_encoder!r} but the teacher was trained with "
                f"{meta['text_encoder']!r}: set model.text_encoder={meta['text_encoder']}"
            )

    def check_streams_as(self, stream: StreamConfig) -> None:
        """A stage rolling this student out must stream it as it was exported: its recorded chunking, steps
        and shift (``stage.causal``, ``schedule.student_steps``, ``schedule.shift``; an export from before
        streaming conventions were recorded: the config decides)."""
        s = self.conventions.streaming
        if s is None:
            return
        errors = []
        if s.causal != stream.causal:
            errors.append(f"stage.causal={stream.causal} (student: {s.causal})")
        if s.steps != stream.steps:
            errors.append(f"schedule.student_steps={stream.steps} (student: {s.steps})")
        if abs(s.shift - stream.shift) > 1e-9:
            errors.append(f"schedule.shift={stream.shift} (student: {s.shift})")
        if errors:
            raise ValueError(f"the student {self.dir} streams differently: {', '.join(errors)}; pass its values")

    def export_student(self, trained, run_dir: Path, runtime: Runtime, stream: StreamConfig, *, model=None) -> Path:
        """The student in this network's format; network.json records how it streams (``stream``: chunking,
        steps, shift). ``model``: the student's network.json "model" when it is not this architecture (another
        size)."""
        # a given chunk 0 is the clean first frame at t = 0; a sampled one keeps the teacher's convention
        clean_first = self.conventions.clean_first_frame or first_chunk_given(stream.causal)
        conventions = dataclasses.replace(self.conventions, clean_first_frame=clean_first, streaming=stream)
        return export_network(
            trained,
            run_dir / "export" / "student",
            model_cfg=model or self.meta["model"],
            runtime=runtime,
            text_encoder_dim=self.text_dim,
            conventions=conventions,
        )
