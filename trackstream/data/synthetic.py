"""Synthetic video world with exact ground-truth point tracks: the embedded default dataset.

Design:
* A clip is a textured background canvas seen through a (possibly panning) camera plus several
  textured sprites that move along smooth random paths (Catmull-Rom through keypoints), rotate,
  occlude each other in a fixed z-order, and may leave the frame and come back.
* Everything is a 2-D rigid transform, so ground truth is exact: a grid query at frame 0 belongs to
  the topmost surface covering it (alpha > 0.5); background points follow the camera pan, sprite
  points follow their sprite's rotation + translation. A point is invisible when it is outside the
  frame or when a sprite above its surface covers it (alpha > 0.5) - what a tracker should report.
* Pixel convention (shared with trackstream/data/trackers.py and cv2.warpAffine): pixel centres at integers,
  x horizontal. Speeds are in units of the frame's shorter side per second, so the same config
  gives comparable motion at any resolution and frame count.
* Deterministic by seed: one numpy Generator seeded with the clip seed drives every random choice.
* `SyntheticVideoDataset` streams batches of clips through the resumable stream machinery of
  trackstream/data/batching.py (exact resume across workers and ranks).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import torch

from trackstream.data.batching import ResumableBatchStream, collate_samples, derive_seed, subsample_tracks
from trackstream.data.placements import Placement, place_tracks
from trackstream.data.sprite_motion import direction_phrase, hermite_path, sprite_matrix, to_frame, to_local
from trackstream.data.sprites import BACKGROUND_COLOURS, SpriteBitmap, background_texture, bilinear, make_sprite
from trackstream.data.tracker_base import grid_queries
from trackstream.data.video_io import frames_to_tensor


@dataclass
class SceneMotion:
    """How every surface of a rendered clip moves: exact tracks of any frame-0 point (the clip's ``scene``).

    ``offset`` [T, 2]: the camera's canvas offset per frame (the background moves by offset[0] - offset[t]);
    ``sprites``: (bitmap, centre [T, 2], angle [T]) in z-order, the last on top. Small (the sprites' bitmaps
    and two numbers a frame each), so a pool keeps it beside its frames and draws new track start points
    for every sample it serves (``data.placements``).
    """

    height: int
    width: int
    offset: np.ndarray
    sprites: list

    def surface(self, points: np.ndarray) -> np.ndarray:
        """Which surface each frame-0 point [N, 2] (x, y) lies on: the topmost sprite whose alpha there is
        above 0.5 (its index), else -1 (the background)."""
        surface = np.full(len(points), -1)
        for k, (s, centre, angle) in enumerate(self.sprites):
            uv = to_local(s, centre[0], angle[0], points)
            surface[bilinear(s.alpha, uv[:, 0], uv[:, 1]) > 0.5] = k
        return surface

    def tracks(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ground truth of frame-0 points [N, 2] pixel (x, y): tracks float32 [T, N, 2], visibility bool [T, N].

        A point follows the surface it lies on at frame 0 (``surface``); it is invisible outside the frame
        or under a sprite above its surface (alpha > 0.5), what a tracker should report."""
        q = np.asarray(points, np.float32).reshape(-1, 2)
        off, t_total = self.offset, len(self.offset)
        surface = self.surface(q)
        tracks = np.zeros((t_total, len(q), 2), np.float32)
        tracks[:] = q[None] + (off[0] - off)[:, None]  # background follows the camera
        for k, (s, centre, angle) in enumerate(self.sprites):
            on = surface == k
            if on.any():
                local = to_local(s, centre[0], angle[0], q[on])
                for t in range(t_total):
                    tracks[t, on] = to_frame(s, centre[t], angle[t], local)
        tracks[0] = q  # exact queries (the round trip through sprite coordinates adds float noise)
        vis = (
            (tracks[..., 0] >= 0)
            & (tracks[..., 0] <= self.width - 1)
            & (tracks[..., 1] >= 0)
            & (tracks[..., 1] <= self.height - 1)
        )
        for k, (s, centre, angle) in enumerate(self.sprites):
            above = surface < k  # surfaces below sprite k (background is -1)
            for t in range(t_total):
                uv = to_local(s, centre[t], angle[t], tracks[t, above])
                vis[t, above] &= bilinear(s.alpha, uv[:, 0], uv[:, 1]) <= 0.5
        return tracks, vis


@dataclass
class SyntheticWorld:
    """Configuration of the procedural world (all sizes relative to the frame's shorter side)."""

    height: int = 64
    width: int = 64
    num_frames: int = 17  # 1 + 4k frames matches the Wan VAE's temporal compression
    fps: int = 16
    num_sprites: tuple[int, int] = (2, 3)  # inclusive range
    sprite_size: tuple[float, float] = (0.26, 0.42)  # diameter / shorter side
    speed: tuple[float, float] = (0.25, 0.6)  # sprite speed, shorter sides per second
    rotation_speed: float = 90.0  # max |angular speed|, degrees per second
    key_interval: float = 0.5  # seconds between trajectory keypoints
    exit_prob: float = 0.25  # chance that a sprite leaves the frame and comes back
    camera_pan_prob: float = 0.5
    pan_speed: tuple[float, float] = (0.15, 0.45)  # shorter sides per second
    # "pan": a constant-velocity pan (new canvas keeps entering); "orbit": the camera circles its frame-0
    # position (radius in shorter sides, period in seconds) and comes back to it every period, so what a
    # long video shows stays knowable from frame 0 (the long-horizon evaluation's world)
    camera_path: str = "pan"
    orbit_radius: tuple[float, float] = (0.05, 0.1)
    orbit_period: tuple[float, float] = (2.0, 4.0)
    grid_size: int = 16  # ground-truth tracks on a grid_size x grid_size grid (real data: 50)
    texture_scale: float = 1.0  # background feature-size multiplier (>1: smoother canvas)
    # False: captions name appearance only (sprites, background), never motion or the camera, so
    # a model can learn motion from the tracks alone (the text cannot stand in for them).
    caption_motion: bool = True
    # A mixture of two kinds of clip: with probability ``object_clips`` a clip is an "objects" clip, rendered
    # with the ``objects`` overrides of these fields (e.g. more, larger sprites under a camera that often
    # holds still), otherwise a "camera" clip with the fields as they are. The draw comes from its own stream
    # of the clip seed, so a camera clip is exactly the clip the world without the mixture renders.
    object_clips: float = 0.0
    objects: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.height < 16 or self.width < 16:
            raise ValueError(f"SyntheticWorld height/width must be >= 16, got {self.height}x{self.width}")
        if self.num_frames < 2:
            raise ValueError(f"SyntheticWorld num_frames must be >= 2, got {self.num_frames}")
        lo, hi = self.num_sprites
        if self.camera_path not in ("pan", "orbit"):
            raise ValueError(f"SyntheticWorld camera_path={self.camera_path!r}; choose pan or orbit")
        if self.texture_scale <= 0:
            raise ValueError(f"SyntheticWorld texture_scale must be > 0, got {self.texture_scale}")
        if not 0.0 <= self.object_clips <= 1.0:
            raise ValueError(f"SyntheticWorld object_clips={self.object_clips} must be in [0, 1] (a share of clips)")
        fixed = {"height", "width", "num_frames", "fps", "grid_size", "object_clips", "objects"}
        bad = sorted(set(self.objects) - (set(self.__dataclass_fields__) - fixed))
        if bad:
            raise ValueError(
                f"SyntheticWorld objects has fields {bad} an objects clip cannot override; it takes "
                f"{sorted(set(self.__dataclass_fields__) - fixed)}"
            )
        if self.objects:
            self.object_world()  # its own checks, now
        if not 0 <= lo <= hi:
            raise ValueError(
                f"SyntheticWorld num_sprites must be (min, max) with 0 <= min <= max, got {self.num_sprites}"
            )

    @property
    def short_side(self) -> int:
        return min(self.height, self.width)

    def object_world(self) -> "SyntheticWorld":
        """The world an objects clip is rendered in (``objects`` over these fields, no further mixture)."""
        extra = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in self.objects.items()}
        return replace(self, **extra, object_clips=0.0, objects={})

    def clip_kind(self, seed: int) -> str:
        """ "objects" or "camera": which of the mixture's kinds clip ``seed`` is ("camera" without a mixture)."""
        if self.object_clips <= 0:
            return "camera"
        return "objects" if np.random.default_rng([int(seed), 0x0B1EC7]).random() < self.object_clips else "camera"

    def generate(self, seed: int) -> dict:
        """Render one clip. Returns numpy arrays: frames uint8 [T, H, W, 3], tracks float32 [T, N, 2],
        visibility bool [T, N] of the ``grid_size`` grid, caption, meta (``meta["kind"]`` in a mixture world) and
        ``scene`` (``SceneMotion``: the tracks of any other frame-0 points)."""
        if self.object_clips > 0:
            kind = self.clip_kind(seed)
            clip = (self.object_world() if kind == "objects" else replace(self, object_clips=0.0)).generate(seed)
            clip["meta"]["kind"] = kind
            return clip
        rng = np.random.default_rng(seed)
        t_idx = np.arange(self.num_frames)
        secs = t_idx / self.fps

        # Camera: constant-velocity pan over a canvas big enough to never show its border.
        pan = np.zeros((self.num_frames, 2), np.float32)
        pan_vel = np.zeros(2)
        if rng.random() < self.camera_pan_prob:
            a = rng.uniform(0, 2 * np.pi)
            if self.camera_path == "orbit":  # a circle through the frame-0 position, either way round
                r = rng.uniform(*self.orbit_radius) * self.short_side
                w = 2 * np.pi / rng.uniform(*self.orbit_period) * rng.choice([-1.0, 1.0])
                ang = a + w * secs
                pan = (r * np.stack([np.cos(ang) - np.cos(a), np.sin(ang) - np.sin(a)], axis=1)).astype(np.float32)
                pan_vel = np.array([r * w, 0.0])  # nonzero: the camera moves (captions, meta)
            else:
                pan_vel = rng.uniform(*self.pan_speed) * self.short_side * np.array([np.cos(a), np.sin(a)])
                pan = (secs[:, None] * pan_vel[None]).astype(np.float32)
        margin = 4
        origin = np.maximum(0, -pan.min(0)) + margin  # canvas coords of frame 0's top-left
        off = pan + origin  # [T, 2] canvas offset of each frame
        canvas_w = int(np.ceil(off[:, 0].max() + self.width + margin))
        canvas_h = int(np.ceil(off[:, 1].max() + self.height + margin))
        bg_colour = BACKGROUND_COLOURS[int(rng.integers(len(BACKGROUND_COLOURS)))]
        canvas = background_texture(
            rng, canvas_h, canvas_w, colour=bg_colour, short_side=self.short_side, texture_scale=self.texture_scale
        )

        num = int(rng.integers(self.num_sprites[0], self.num_sprites[1] + 1))
        sprites = [
            make_sprite(
                rng,
                diameter=rng.uniform(*self.sprite_size) * self.short_side,
                short_side=self.short_side,
                background=bg_colour,
            )
            for _ in range(num)
        ]
        paths = [self._path(rng, secs, s) for s in sprites]  # list of (centre [T, 2], angle [T], exits)

        frames = np.empty((self.num_frames, self.height, self.width, 3), np.uint8)
        for t in range(self.num_frames):
            m_bg = np.array([[1, 0, -off[t, 0]], [0, 1, -off[t, 1]]], np.float32)
            img = cv2.warpAffine(
                canvas, m_bg, (self.width, self.height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
            )
            for s, (centre, angle, _) in zip(sprites, paths):  # list order is z-order, last on top
                layer = cv2.warpAffine(
                    s.rgba,
                    sprite_matrix(s, centre[t], angle[t]),
                    (self.width, self.height),
                    flags=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT,
                    borderValue=0,
                )
                img = img * (1.0 - layer[..., 3:]) + layer[..., :3]  # premultiplied "over"
            frames[t] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)

        scene = SceneMotion(
            height=self.height,
            width=self.width,
            offset=off.astype(np.float32),
            sprites=[(s, centre, angle) for s, (centre, angle, _) in zip(sprites, paths)],
        )
        tracks, vis = scene.tracks(grid_queries(self.height, self.width, self.grid_size)[:, 1:])
        caption = self.caption(sprites, paths, pan_vel, bg_colour)
        meta = {
            "id": f"synthetic-{seed}",
            "source": "synthetic",
            "seed": int(seed),
            "fps": self.fps,
            "height": self.height,
            "width": self.width,
            "num_frames": self.num_frames,
            "num_sprites": num,
            "camera_pan": bool(np.any(pan_vel)),
        }
        return {
            "frames": frames,
            "tracks": tracks,
            "visibility": vis,
            "caption": caption,
            "meta": meta,
            "scene": scene,
        }

    def sample(self, seed: int) -> dict:
        """One clip in the shared sample schema (video float32 [3, T, H, W] in [-1, 1], ...)."""
        clip = self.generate(seed)
        return {
            "video": frames_to_tensor(clip["frames"]),
            "tracks": torch.from_numpy(clip["tracks"]),
            "visibility": torch.from_numpy(clip["visibility"]),
            "caption": clip["caption"],
            "meta": clip["meta"],
            "scene": clip["scene"],
        }

    # -- internals -------------------------------------------------------------------------------

    def _path(self, rng: np.random.Generator, secs: np.ndarray, sprite: SpriteBitmap):
        """Smooth centre path [T, 2], angle [T] (radians) and whether the sprite exits the frame.

        Keypoints are placed in time at the sprite's own speed, so no segment is faster than the
        sampled speed (x1.5 for the exit manoeuvre): the path never teleports, whatever the clip length.
        """
        w, h, s = self.width, self.height, self.short_side
        radius = sprite.rgba.shape[0] / 2.0
        lo = np.array([radius * 0.6, radius * 0.6])
        hi = np.array([w - 1 - radius * 0.6, h - 1 - radius * 0.6])
        speed = rng.uniform(*self.speed) * s  # pixels per second
        duration = float(secs[-1])
        keys, key_t = [rng.uniform(lo, hi)], [0.0]
        exits = rng.random() < self.exit_prob
        if exits:
            # Start near a border, leave through it until fully off-screen, then come back in.
            side = int(rng.integers(4))
            axis, far = side // 2, side % 2 == 1
            limit = (w, h)[axis] - 1
            start = keys[0]
            start[axis] = (
                hi[axis] - rng.uniform(0, 0.2) * (hi - lo)[axis]
                if far
                else lo[axis] + rng.uniform(0, 0.2) * (hi - lo)[axis]
            )
            out = start.copy()
            out[axis] = limit + 1.2 * radius if far else -1.2 * radius
            out[1 - axis] = np.clip(start[1 - axis] + rng.normal(0, 0.3 * radius), lo[1 - axis], hi[1 - axis])
            back = start.copy()
            back[1 - axis] = np.clip(out[1 - axis] + rng.normal(0, 0.3 * radius), lo[1 - axis], hi[1 - axis])
            t_out = key_t[0] + np.linalg.norm(out - start) / (1.5 * speed)
            t_back = t_out + np.linalg.norm(back - out) / (1.5 * speed)
            exits = t_back <= duration
            if exits:
                keys += [out, back]
                key_t += [t_out, t_back]
        heading = rng.uniform(0, 2 * np.pi)
        step = speed * self.key_interval
        while key_t[-1] < duration:
            heading += rng.normal(0.0, 0.6)
            d = np.array([np.cos(heading), np.sin(heading)])
            q = keys[-1] + step * d
            for ax in range(2):  # bounce off the walls so the sprite stays in view
                if q[ax] < lo[ax] or q[ax] > hi[ax]:
                    d[ax] = -d[ax]
            keys.append(np.clip(keys[-1] + step * d, lo, hi))
            key_t.append(key_t[-1] + self.key_interval)
            heading = float(np.arctan2(d[1], d[0]))
        centre = hermite_path(np.stack(keys), np.asarray(key_t), secs).astype(np.float32)
        omega = 0.0 if rng.random() < 0.25 else np.deg2rad(rng.uniform(-self.rotation_speed, self.rotation_speed))
        angle = (rng.uniform(0, 2 * np.pi) + omega * secs).astype(np.float32)
        return centre, angle, exits

    def caption(self, sprites, paths, pan_vel, bg_colour) -> str:
        phrases = []
        for s, (centre, angle, exits) in sorted(zip(sprites, paths), key=lambda sp: -sp[0].rgba.shape[0]):
            name = f"a {s.pattern} {s.colour} {s.shape}"
            if not self.caption_motion:
                phrases.append(name)
                continue
            disp = centre[-1] - centre[0]
            path_len = float(np.linalg.norm(np.diff(centre, axis=0), axis=1).sum())
            if np.linalg.norm(disp) < 0.1 * self.short_side:
                motion = "wanders around" if path_len > 0.3 * self.short_side else "stays in place"
            else:
                motion = "moves " + direction_phrase(disp)
            if exits:
                motion += ", leaves the frame and comes back"
            turn = float(np.rad2deg(angle[-1] - angle[0]))
            if abs(turn) > 30:
                motion += " while spinning " + ("clockwise" if turn > 0 else "counterclockwise")
            phrases.append(f"{name} {motion}")
        text = "; ".join(phrases) if phrases else "an empty scene"
        text = text[0].upper() + text[1:]
        if not self.caption_motion:
            text += f". A textured {bg_colour} background."
        elif np.any(pan_vel) and self.camera_path == "orbit":
            text += f". The camera circles over a textured {bg_colour} background."
        elif np.any(pan_vel):
            # Pan direction is the camera's: the scene content moves the opposite way on screen.
            text += f". The camera pans {direction_phrase(pan_vel).removeprefix('to the ')} over a textured {bg_colour} background."
        else:
            text += f". Static camera, textured {bg_colour} background."
        return text


class SyntheticVideoDataset(ResumableBatchStream):
    """Resumable stream of batches of synthetic clips (see trackstream/data/batching.py for the ordering rules).

    Sample i of this rank's stream is global index g = i * world_size + rank. With num_samples set,
    the world is a fixed set of num_samples clips visited in a fresh permutation every epoch;
    otherwise every g is a new clip. num_tracks: None keeps all grid tracks; (lo, hi) draws a count
    per sample (tracks never visible are not drawn). placement: each sample's start points drawn from
    that mixture instead (``data.placements``).
    """

    def __init__(
        self,
        world: SyntheticWorld,
        *,
        batch_size: int = 1,
        seed: int = 0,
        num_samples: int | None = None,
        num_tracks: tuple[int, int] | int | None = None,
        placement: Placement | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        num_workers: int = 0,
    ):
        super().__init__(batch_size=batch_size, seed=seed, rank=rank, world_size=world_size, num_workers=num_workers)
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"num_samples must be None or >= 1, got {num_samples}")
        self.world, self.num_samples, self.num_tracks, self.placement = world, num_samples, num_tracks, placement

    def clip_seed(self, sample_index: int) -> int:
        """World seed of this rank's sample_index-th sample."""
        g = sample_index * self.world_size + self.rank
        if self.num_samples is None:
            return derive_seed(self.seed, "clip", g)
        epoch, pos = divmod(g, self.num_samples)
        perm = np.random.default_rng(derive_seed(self.seed, "epoch", epoch)).permutation(self.num_samples)
        return derive_seed(self.seed, "clip", int(perm[pos]))

    def get_sample(self, sample_index: int) -> dict:
        seed = self.clip_seed(sample_index)
        sample = self.world.sample(seed)
        rng = np.random.default_rng(derive_seed(self.seed, "tracks", self.rank, sample_index))
        if self.placement is not None:
            return place_tracks(sample, self.placement, rng)
        if self.num_tracks is not None:
            sample = subsample_tracks(sample, self.num_tracks, rng)
        return sample

    def make_batch(self, stream_index: int) -> dict:
        b = self.batch_size
        batch = collate_samples([self.get_sample(stream_index * b + j) for j in range(b)])
        batch["stream_index"] = stream_index
        return batch

    def _iter_batches(self, start: int, worker_id: int, num_workers: int):
        i = start + worker_id
        while True:  # random access: any worker can build any batch
            yield self.make_batch(i)
            i += num_workers
