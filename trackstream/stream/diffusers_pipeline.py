"""The exported causal student as a diffusers pipeline: whole clips, or a stream chunk by chunk.

    pipe = DiffusionPipeline.from_pretrained(FOLDER, trust_remote_code=True)    # trackstream export --format pipeline
    video = pipe(image=img, tracks=tracks, prompt="...", generator=torch.Generator().manual_seed(0)).frames[0]

    state = pipe.prepare(image=img, prompt="...", num_tracks=N, generator=g)     # once
    while True:
        lo, hi = state.frame_range                                              # the next chunk's pixel frames
        frames = pipe.step(state, tracks=tracks[lo:hi], visibility=vis[lo:hi])  # [hi - lo, H, W, 3] in [0, 1]

Both drive ``stream.engine.StreamingGenerator`` exactly as ``trackstream generate`` does (``stream.generate``:
the track IDs and the noise from one seed, chunk 0 = the given first frame, the static-buffer step, a prompt
switch re-caching the held chunks), so on the same inputs and seed the frames are generate's. The seed is
``generator.initial_seed()`` (an int is taken as is; none: 0, generate's default ``--seed``): the engine keeps
its own noise state per stream (``StreamState.noise``), which is what makes a stream replayable and branchable.

Inputs as diffusers users pass them: ``image`` a PIL image, an RGB array [H, W, 3] (uint8, or floats in [0, 1])
or a tensor [3, H, W] / [1, 3, H, W] in [0, 1], at the student's size; ``tracks`` [T, N, 2] PIXEL (x, y) and
``visibility`` [T, N] (``data.track_inputs.check_tracks``: a bad array is a one-line ValueError naming it).
The scheduler in the folder records the student's sigma schedule (flow matching, its shift); the steps
themselves come from the network's ``network.json`` conventions, as in every TrackStream command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from trackstream.data.track_inputs import check_tracks
from trackstream.models.tracks import latent_frames, sample_track_ids
from trackstream.stream.chunk_io import tracks_from_array
from trackstream.stream.chunks import chunk_pixel_frames, whole_chunks
from trackstream.stream.engine import StreamingGenerator

__all__ = ["TrackStreamPipeline", "TrackStreamPipelineOutput", "TrackStreamState", "OUTPUT_TYPES"]

OUTPUT_TYPES = ("np", "pil", "pt")


@dataclass
class TrackStreamPipelineOutput(BaseOutput):
    """``frames``: a batch of videos in diffusers' convention ("np": [B, T, H, W, 3] floats in [0, 1]; "pil": a
    list of lists of PIL images; "pt": [B, T, 3, H, W] in [0, 1])."""

    frames: Any


@dataclass(eq=False)
class TrackStreamState:
    """One stream between ``prepare`` and its ``step`` calls; ``step`` advances it in place (``stream`` holds
    the engine's immutable ``StreamState``: keep a copy of it to replay or branch the stream)."""

    engine: StreamingGenerator
    stream: Any
    num_tracks: int
    prompt: str
    seed: int
    conditioner: Any = field(repr=False)

    @property
    def chunk(self) -> int:
        """The index of the next chunk ``step`` generates."""
        return self.stream.chunk

    @property
    def frame_range(self) -> tuple[int, int]:
        """[start, stop) pixel frames of the next chunk: the frames whose tracks ``step`` takes."""
        return chunk_pixel_frames(self.engine.causal, self.stream.chunk)


def _seed(generator) -> int:
    if generator is None:
        return 0
    if isinstance(generator, (list, tuple)) and len(generator) == 1:
        generator = generator[0]
    if isinstance(generator, torch.Generator):
        return int(generator.initial_seed())
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return int(generator)
    raise ValueError(
        f"generator must be a torch.Generator (its initial_seed() seeds the stream) or an int, got {generator!r}"
    )


def _image_tensor(image, height: int, width: int) -> torch.Tensor:
    """``image`` -> [1, 3, H, W] in [-1, 1] (a uint8 image exactly as ``data.video_io.image_tensor`` makes it)."""
    from PIL import Image

    from trackstream.data.video_io import image_tensor

    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] == 3:
        x = (
            image_tensor(image)
            if image.dtype == np.uint8
            else torch.from_numpy(image).float().permute(2, 0, 1)[None] * 2 - 1
        )
    elif torch.is_tensor(image) and image.ndim in (3, 4) and image.shape[-3] == 3:
        x = (image[None] if image.ndim == 3 else image).float().cpu() * 2 - 1
    else:
        shape = getattr(image, "shape", None)
        raise ValueError(
            f"image must be a PIL image, an RGB array [H, W, 3] or a tensor [3, H, W] in [0, 1], got "
            f"{type(image).__name__}{'' if shape is None else ' ' + str(tuple(shape))}"
        )
    if x.shape[0] != 1:
        raise ValueError(f"image holds a batch of {x.shape[0]}: a stream starts from one image")
    h, w = x.shape[-2:]
    if (h, w) != (height, width):
        raise ValueError(
            f"image is {w}x{h} but the student streams {width}x{height} (its network.json): resize the image (and "
            "scale the tracks) to the student's size"
        )
    if not torch.isfinite(x).all() or x.min() < -1.001 or x.max() > 1.001:
        raise ValueError("image values must lie in [0, 1] (floats) or be uint8")
    return x


def _frames(frames: torch.Tensor, output_type: str):
    """Decoded frames [3, T, H, W] in [-1, 1] -> one video as ``output_type`` ("np" [T, H, W, 3] in [0, 1])."""
    from trackstream.data.video_io import to_uint8

    if output_type == "pil":
        from PIL import Image

        return [Image.fromarray(f) for f in to_uint8(frames)]
    video = ((frames.float().clamp(-1, 1) + 1) / 2).permute(1, 0, 2, 3)  # [T, 3, H, W]
    return video.cpu() if output_type == "pt" else video.permute(0, 2, 3, 1).cpu().numpy()


def _check_output_type(output_type: str) -> str:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type={output_type!r} is not one of {OUTPUT_TYPES}")
    return output_type


class TrackStreamPipeline(DiffusionPipeline):
    """A TrackStream causal student with its codec and text encoder (``stream.diffusers_components``)."""

    model_cpu_offload_seq = "text_encoder->image_encoder->transformer->vae"
    _optional_components = ["image_encoder"]

    def __init__(self, transformer, vae, text_encoder, scheduler, image_encoder=None):
        super().__init__()
        self.register_modules(
            transformer=transformer,
            vae=vae,
            text_encoder=text_encoder,
            scheduler=scheduler,
            image_encoder=image_encoder,
        )

    @property
    def network(self):
        return self.transformer.network

    def _conditioner(self):
        """The frozen encoders as every TrackStream command uses them (``models.conditioner.Conditioner``), on
        the network's device (made per stream: ``pipe.to`` may have moved the parts since)."""
        from dataclasses import replace

        from trackstream.models.conditioner import Conditioner
        from trackstream.models.motion_wan import ModelConfig

        model = ModelConfig(**self.transformer.info["network"]["model"])
        # the encoders are this folder's components: the paths recorded at training time are not read
        model = replace(model, text_encoder_path=None, image_encoder_path=None, image_processor=None)
        device = next(self.network.parameters()).device
        image_encoder = None if self.image_encoder is None else self.image_encoder.encoder
        return Conditioner.for_network(
            model,
            codec=self.vae.codec,
            text_encoder=self.text_encoder.encoder,
            device=device,
            image_encoder=image_encoder,
        )

    def _stream_config(self):
        """The student's own chunking and steps, as ``trackstream generate`` takes them without overrides."""
        return self.network.conventions.stream_config(
            "transformer", steps=None, shift=None, sink_chunks=None, window_chunks=None
        )

    @torch.no_grad()
    def prepare(self, image, prompt: Optional[str] = "", *, num_tracks: int, generator=None) -> TrackStreamState:
        """A new stream from its first frame, its prompt and the number of tracks every chunk will carry
        (the track IDs are drawn once, from the seed, as ``trackstream generate`` draws them)."""
        net = self.network
        if not isinstance(num_tracks, (int, np.integer)) or isinstance(num_tracks, bool) or num_tracks < 1:
            raise ValueError(
                f"num_tracks must be a positive int (the N of every chunk's [T, N, 2] tracks), got {num_tracks!r}"
            )
        if prompt is not None and not isinstance(prompt, str):
            raise ValueError(f"prompt must be one string (one stream), got {type(prompt).__name__}")
        seed, prompt = _seed(generator), prompt or ""
        conv = net.conventions
        x = _image_tensor(image, conv.height, conv.width)
        cfg = self._stream_config()
        cond = self._conditioner()
        engine = StreamingGenerator(net, self.vae.codec, config=cfg, image_features_fn=cond.image_features)
        text, lens = cond.text([prompt])
        ids = sample_track_ids(
            1, int(num_tracks), id_range=net.track_id_range, generator=torch.Generator().manual_seed(seed)
        )
        stream = engine.start(x.to(engine.device), text, lens, track_ids=ids, seed=seed)
        return TrackStreamState(engine, stream, int(num_tracks), prompt, seed, cond)

    @torch.no_grad()
    def step(
        self, state: TrackStreamState, tracks=None, visibility=None, prompt: Optional[str] = None, output_type="np"
    ):
        """The next chunk's frames (``state.frame_range``) from ITS tracks [T_chunk, N, 2] pixel (x, y) and
        visibility [T_chunk, N] (None: all visible; ``tracks=None``: no tracks, the empty motion condition).
        ``prompt``: switch to it from this chunk on (the held chunks re-cached under it, ``stream.recache``)."""
        if not isinstance(state, TrackStreamState):
            raise ValueError(f"state must be what pipe.prepare returned, got {type(state).__name__}")
        _check_output_type(output_type)
        lo, hi = state.frame_range
        if tracks is not None:
            arr = tracks.detach().cpu().numpy() if torch.is_tensor(tracks) else np.asarray(tracks)
            vis = visibility.detach().cpu().numpy() if torch.is_tensor(visibility) else visibility
            cond = state.stream.cond
            arr, vis = check_tracks(
                arr, vis, height=cond.height, width=cond.width, tracks_name="tracks", visibility_name="visibility"
            )
            if arr.shape[:2] != (hi - lo, state.num_tracks):
                raise ValueError(
                    f"tracks of chunk {state.chunk} must be [{hi - lo}, {state.num_tracks}, 2] (pixel frames "
                    f"[{lo}, {hi}), the num_tracks of prepare), got {list(arr.shape)}"
                )
            tracks, visibility = torch.from_numpy(arr)[None], torch.from_numpy(vis)[None]
        elif visibility is not None:
            raise ValueError("visibility was given without tracks: pass the chunk's tracks too, or neither")
        return _frames(self._advance(state, tracks, visibility, prompt)[0], output_type)

    def _advance(self, state: TrackStreamState, tracks, visibility, prompt: Optional[str]) -> torch.Tensor:
        """Switch the prompt if asked (as ``stream.prompts.scheduled_stream`` does between chunks), generate
        the chunk and advance ``state``; the chunk's frames [1, 3, T_chunk, H, W] in [-1, 1]."""
        if prompt is not None and not isinstance(prompt, str):
            raise ValueError(f"prompt must be one string or None (keep the current one), got {type(prompt).__name__}")
        if prompt is not None and prompt != state.prompt:
            text, lens = state.conditioner.text([prompt])
            state.stream = state.engine.switch_prompt(state.stream, text, lens, sink="recache")
            state.prompt = prompt
        out, state.stream = state.engine.step(state.stream, tracks, visibility)
        return out.frames

    @torch.no_grad()
    def __call__(
        self,
        image=None,
        tracks=None,
        visibility=None,
        prompt: Optional[str] = "",
        num_frames: Optional[int] = None,
        generator=None,
        output_type: str = "np",
        return_dict: bool = True,
    ):
        """The whole clip: ``num_frames`` frames (default: the whole chunks the tracks' T frames cover, as
        ``trackstream generate`` streams them), streamed chunk by chunk; frames past the tracks get none."""
        _check_output_type(output_type)
        if tracks is None:
            raise ValueError(
                "tracks are required: [T, N, 2] pixel (x, y) per frame (an empty stream: pipe.prepare / step)"
            )
        arr = tracks.detach().cpu().numpy() if torch.is_tensor(tracks) else np.asarray(tracks)
        vis = visibility.detach().cpu().numpy() if torch.is_tensor(visibility) else visibility
        conv = self.network.conventions
        arr, vis = check_tracks(
            arr, vis, height=conv.height, width=conv.width, tracks_name="tracks", visibility_name="visibility"
        )
        n, keep = self._chunks(arr.shape[0], num_frames)
        state = self.prepare(image, prompt, num_tracks=arr.shape[1], generator=generator)
        source = tracks_from_array(torch.from_numpy(arr)[None], torch.from_numpy(vis)[None])
        chunks = []
        for _ in self.progress_bar(range(n)):
            got = source(state.chunk, state.frame_range)
            chunks.append(self._advance(state, *(got or (None, None)), None))
        video = _frames(torch.cat(chunks, 2)[0, :, :keep], output_type)
        frames = [video] if output_type == "pil" else video[None]
        self.maybe_free_model_hooks()
        return TrackStreamPipelineOutput(frames=frames) if return_dict else (frames,)

    def _chunks(self, num_tracked: int, num_frames: Optional[int]) -> tuple[int, int]:
        """(chunks to stream, frames to return) for tracks of ``num_tracked`` frames and ``num_frames``."""
        causal = self._stream_config().causal
        if num_frames is None:
            n = whole_chunks(causal, latent_frames(num_tracked))
            if n < 2:
                need = chunk_pixel_frames(causal, 1)[1]
                raise ValueError(
                    f"tracks cover {num_tracked} frames (read as [T, N, 2]) but a clip needs at least {need}: give "
                    "more frames of tracks, transpose an array saved as [N, T, 2], or pass num_frames"
                )
            return n, chunk_pixel_frames(causal, n - 1)[1]
        if not isinstance(num_frames, (int, np.integer)) or isinstance(num_frames, bool) or num_frames < 1:
            raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
        n = 1
        while chunk_pixel_frames(causal, n - 1)[1] < num_frames:  # whole chunks up to it; the last one cut
            n += 1
        return n, int(num_frames)
