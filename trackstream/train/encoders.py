"""The frozen encoders a stage conditions with and the training data they encode: the text encoder
(``load_text_encoder``), the training pool's clips encoded on their first use (``EncodedPool``) and the batches
of the teacher's data (``training_data``: the teacher stage's, and the causal students' trained on it)."""

from __future__ import annotations

import torch
import torch.nn as nn

from trackstream.data.clips import ClipPool, DataConfig, build_raw_stream
from trackstream.data.placements import placement_from
from trackstream.data.pool_stream import PoolStream, collate_pool, draw_tracks
from trackstream.models.conditioner import Conditioner
from trackstream.models.motion_wan import ModelConfig
from trackstream.models.precision import resolve_dtype
from trackstream.trainer.dist import Runtime
from trackstream.trainer.parallel import prepare_frozen

__all__ = ["EncodedPool", "load_text_encoder", "training_data"]


def load_text_encoder(model: ModelConfig, runtime: Runtime) -> nn.Module:
    """The frozen text encoder ``model.text_encoder`` (from ``model.text_encoder_path`` when set)."""
    from trackstream.models.text_encoders import build_text_encoder

    kwargs = {"path": model.text_encoder_path} if model.text_encoder_path else {}
    if model.text_encoder.lower().startswith("umt5"):  # 5.7B parameters: in the auto precision
        kwargs["dtype"] = resolve_dtype("auto", runtime.device)
    enc = build_text_encoder(model.text_encoder, **kwargs)
    return prepare_frozen(runtime, enc)


class EncodedPool:
    """The pool's clips encoded by the frozen codec / text encoder (CPU-resident entries), each on its first
    use and alone: a short run (a fine-tune, a first-losses check) encodes only the clips it draws, and a clip's
    tensors do not depend on which clips it was first drawn with, so a resumed run reads the values the
    uninterrupted one did. ``pool[i]`` = {latents, text_emb, text_len, tracks, visibility, caption, meta, and
    image / image_features where the network's layout has them}."""

    def __init__(self, pool: ClipPool, conditioner: Conditioner):
        self.pool, self.conditioner = pool, conditioner
        self._entries: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.pool)

    def __getitem__(self, i: int) -> dict:
        if i not in self._entries:
            self._entries[i] = self._encode(i)
        return self._entries[i]

    @torch.no_grad()
    def held(self, i: int) -> dict:
        """Entry ``i`` with the latents of its clip's first frame held for the whole clip (encoded on first use)."""
        key = ("held", i)
        if key not in self._entries:
            video = self.pool.videos([i])  # [1, 3, T, H, W]
            still = video[:, :, :1].expand_as(video).contiguous()
            self._entries[key] = {**self[i], "latents": self.conditioner.latents(still).cpu()[0]}
        return self._entries[key]

    @torch.no_grad()
    def _encode(self, i: int) -> dict:
        c, clip = self.conditioner, self.pool.clips[i]
        video = self.pool.videos([i])  # [1, 3, T, H, W]
        text, lens = c.text([clip["caption"]])
        entry = {
            "latents": c.latents(video).cpu()[0],
            "text_emb": text[0, : int(lens[0])].cpu(),
            "text_len": int(lens[0]),
            "tracks": torch.from_numpy(clip["tracks"]),
            "visibility": torch.from_numpy(clip["visibility"]),
            "caption": clip["caption"],
            "meta": clip["meta"],
            "scene": clip.get("scene"),  # exact tracks of new start points (data.placements)
        }
        image = c.image(video[:, :, 0], num_frames=video.shape[2])
        features = c.image_features(video[:, :, 0])
        if image is not None:
            entry["image"] = image[0].cpu()
        if features is not None:
            entry["image_features"] = features[0].cpu()
        return entry


def training_data(data: DataConfig, runtime: Runtime, pool: ClipPool | None, conditioner: Conditioner):
    """Batches of the encoded clip pool (``data.pool_size``), or rendered clips streamed as they come. Each
    sample's input tracks are drawn from its raw clip, in ``data.num_workers`` loader processes when set (the
    CPU's share of a step, made while the previous step trains); the batch is assembled here, where the
    encoders are. With ``data.placement.hold_none`` a sample drawn without tracks trains on its first frame held."""
    placement = placement_from(data.placement)
    hold = placement is not None and placement.hold_none
    if pool is None:
        if hold:
            raise ValueError(
                "data.placement.hold_none holds a clip's first frame in its encoded latents: set data.pool_size "
                "(the encoded pool) or leave hold_none false"
            )
        return build_raw_stream(data, rank=runtime.data_rank, world_size=runtime.data_world_size)
    entries = EncodedPool(pool, conditioner)

    def draw(idx, gids):
        return [
            draw_tracks(pool.clips[i], g, seed=data.seed, num_tracks=data.num_tracks, placement=data.placement)
            for i, g in zip(idx, gids)
        ]

    def make(idx, gids, drawn):
        # placement.hold_none: a sample drawn without tracks learns the held first frame
        rows = [entries.held(i) if hold and d.get("placement") == "none" else entries[i] for i, d in zip(idx, drawn)]
        return collate_pool(rows, drawn)

    return PoolStream(
        len(entries),
        batch_size=data.batch_size,
        seed=data.seed,
        make_batch=make,
        draw=draw,
        num_workers=data.num_workers,
        rank=runtime.data_rank,  # the K ranks of a sequence group read the same samples
        world_size=runtime.data_world_size,
    )
