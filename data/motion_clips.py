"""Captioned camera-motion clips made on the fly from the eight photographs (`data.photos`).

The training data of the tiny video world (`modules/video_world.py`): each clip is a camera moving
over one photograph — a pan in one of eight directions at 1, 2 or 3 px/frame, a zoom in or out, or
a still camera — rendered as `num_frames` windows of `size`×`size` pixels, with a caption naming the
photograph and the motion ("a photo of a cat, panning left quickly"; a still camera keeps the
photo's plain caption). Captions are dropped to "" with probability `caption_dropout` (classifier-
free guidance).

Geometry. The photo is `data.photos.photo(name, S)` with a canvas side `S` drawn per clip from
`[min_scale, max_scale]` (40..56 by default: 40 is the image world's and the bundled pans' scale,
a 3 px/frame pan over 8 frames travels 21 px and needs S >= 32 + 21 = 53). Pans are exact integer
crops (frame n = window at `(x0 + n·vx, y0 + n·vy)`); zooms resample a square region whose side
changes geometrically by `zoom_ratio` over the clip (bilinear, `cv2.warpAffine`).

Sign convention. The caption names the *camera's* motion; the *content* moves the other way.
`Motion.displacement` is the content displacement per frame `(dx, dy)` in pixels (x right, y
down), the convention of `modules.metrics` flows: `frame_n(y, x) ≈ frame_{n+1}(y + dy, x + dx)`.
"Panning left" → the window moves left → content moves right: `(+s, 0)`. "Panning up" → `(0, +s)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data.photos import PHOTOS, photo

#: camera directions of the pans -> unit camera velocity (x right, y down)
PAN_DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1),
    "up left": (-1, -1), "up right": (1, -1), "down left": (-1, 1), "down right": (1, 1),
}
ZOOMS = ("in", "out")
SPEED_WORDS: dict[int, str] = {1: "slowly", 2: "steadily", 3: "quickly"}
#: every word the motion captions add to the photo captions (the video world's tokenizer needs them)
MOTION_WORDS: list[str] = [",", "panning", "zooming", "left", "right", "up", "down", "in", "out",
                           *SPEED_WORDS.values()]


@dataclass(frozen=True)
class Motion:
    """One camera motion. `kind`: "pan" (with `direction` a key of PAN_DIRECTIONS and `speed` in
    px/frame along each moving axis), "zoom" (`direction` "in" or "out") or "static"."""

    kind: Literal["pan", "zoom", "static"]
    direction: str = ""
    speed: int = 0

    def __post_init__(self):
        if self.kind == "pan":
            if self.direction not in PAN_DIRECTIONS:
                raise ValueError(f"pan direction must be one of {list(PAN_DIRECTIONS)}, got {self.direction!r}")
            if self.speed not in SPEED_WORDS:
                raise ValueError(f"pan speed must be one of {list(SPEED_WORDS)} px/frame, got {self.speed!r}")
        elif self.kind == "zoom":
            if self.direction not in ZOOMS:
                raise ValueError(f"zoom direction must be 'in' or 'out', got {self.direction!r}")
        elif self.kind != "static":
            raise ValueError(f"motion kind must be 'pan', 'zoom' or 'static', got {self.kind!r}")

    @property
    def camera_velocity(self) -> tuple[int, int]:
        """Window displacement per frame (x right, y down) in pixels (0, 0 for zoom and static)."""
        if self.kind != "pan":
            return (0, 0)
        ux, uy = PAN_DIRECTIONS[self.direction]
        return (ux * self.speed, uy * self.speed)

    @property
    def displacement(self) -> tuple[float, float]:
        """Content displacement per frame (dx, dy): minus the camera velocity (see module doc)."""
        cx, cy = self.camera_velocity
        return (float(-cx), float(-cy))

    @property
    def words(self) -> str:
        """The caption's motion phrase ("" for a still camera)."""
        if self.kind == "pan":
            return f"panning {self.direction} {SPEED_WORDS[self.speed]}"
        if self.kind == "zoom":
            return f"zooming {self.direction}"
        return ""

    @property
    def name(self) -> str:
        """A short identifier: `pan_up_left_2`, `zoom_in`, `static`."""
        if self.kind == "pan":
            return f"pan_{self.direction.replace(' ', '_')}_{self.speed}"
        return f"zoom_{self.direction}" if self.kind == "zoom" else "static"


def all_motions(speeds=(1, 2, 3)) -> list[Motion]:
    """Every pan direction at every speed, both zooms, and the still camera."""
    return ([Motion("pan", d, s) for d in PAN_DIRECTIONS for s in speeds]
            + [Motion("zoom", z) for z in ZOOMS] + [Motion("static")])


def motion_caption(photo_name: str, motion: Motion) -> str:
    """"a photo of a cat, panning left quickly"; the plain photo caption for a still camera."""
    if photo_name not in PHOTOS:
        raise ValueError(f"unknown photo {photo_name!r}; choose one of {sorted(PHOTOS)} (data/photos.py PHOTOS)")
    words = motion.words
    return f"{PHOTOS[photo_name]}, {words}" if words else PHOTOS[photo_name]


def pan_travel(motion: Motion, num_frames: int) -> tuple[int, int]:
    """Total window travel (|x|, |y|) of a pan over the clip, in pixels."""
    cx, cy = motion.camera_velocity
    return abs(cx) * (num_frames - 1), abs(cy) * (num_frames - 1)


def min_canvas(motion: Motion, num_frames: int = 8, size: int = 32) -> int:
    """Smallest canvas side a motion fits in (pans: the window plus its travel)."""
    return size + max(pan_travel(motion, num_frames))


def render_pan(canvas: np.ndarray, motion: Motion, x0: int, y0: int, num_frames: int = 8, size: int = 32) -> np.ndarray:
    """`(F, size, size, 3)` uint8: frame n is the window of `canvas` at `(x0 + n·vx, y0 + n·vy)`."""
    cx, cy = motion.camera_velocity
    s = canvas.shape[0]
    frames = []
    for n in range(num_frames):
        x, y = x0 + n * cx, y0 + n * cy
        if not (0 <= x <= s - size and 0 <= y <= canvas.shape[1] - size):
            raise ValueError(f"frame {n} window at ({x}, {y}) leaves the {canvas.shape[1]}×{s} canvas "
                             f"({motion.name}, start ({x0}, {y0})); use a larger canvas (min_canvas)")
        frames.append(canvas[y:y + size, x:x + size])
    return np.stack(frames)


def zoom_sides(r_big: float, direction: str, num_frames: int = 8, ratio: float = 1.4) -> np.ndarray:
    """Region side per frame: geometric from `r_big` to `r_big / ratio` (zoom in) or back (zoom out)."""
    q = ratio ** (-np.arange(num_frames) / max(1, num_frames - 1))
    sides = r_big * q
    return sides if direction == "in" else sides[::-1].copy()


def render_zoom(canvas: np.ndarray, sides, cx: float, cy: float, size: int = 32) -> np.ndarray:
    """`(F, size, size, 3)` uint8: frame n is the square region of side `sides[n]` centred at
    canvas coordinates `(cx, cy)` (pixel centres at integer + 0.5), resampled bilinearly to `size`."""
    import cv2

    frames = []
    for r in sides:
        k = r / size  # canvas pixels per output pixel
        # output pixel u (centre u + 0.5) -> canvas x = cx + (u + 0.5 - size/2)·k - 0.5 (cv2 samples at integers)
        m = np.array([[k, 0, cx + (0.5 - size / 2) * k - 0.5], [0, k, cy + (0.5 - size / 2) * k - 0.5]], np.float64)
        frames.append(cv2.warpAffine(canvas, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                     borderMode=cv2.BORDER_REFLECT))
    return np.stack(frames)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 `(F, H, W, 3)` -> float `(3, F, H, W)` in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1


@dataclass
class ClipSpec:
    """Everything that fixes one clip (what `MotionClips.sample_spec` draws)."""

    photo: str
    motion: Motion
    scale: int  # canvas side S: the photo is photo(name, S)
    x0: float  # pans: window's top-left at frame 0; zooms: region centre
    y0: float
    zoom_side: float = 0.0  # zooms: the largest region side


class MotionClips(Dataset):
    """`length` random captioned clips, deterministic per (seed, epoch, index).

    Each item: `pixel_values` `(3, F, size, size)` in [-1, 1], `caption` (possibly "" by dropout),
    `photo` (name), `motion` (`Motion.name`), `displacement` `(2,)` float (content px/frame; 0 for
    zooms and stills), `scale` (canvas side)."""

    def __init__(self, photos: list[str] | None = None, num_frames: int = 8, size: int = 32,
                 min_scale: int = 40, max_scale: int = 56, speeds: tuple[int, ...] = (1, 2, 3),
                 p_static: float = 0.1, p_zoom: float = 0.15, zoom_ratio: float = 1.4,
                 caption_dropout: float = 0.1, length: int = 1024, seed: int = 0, position_jitter: int | None = None,
                 direction_per_photo: bool = False):
        self.direction_per_photo = bool(direction_per_photo)
        if position_jitter is not None and position_jitter < 0:
            raise ValueError(f"position_jitter must be None (anywhere on the canvas) or >= 0 px, got {position_jitter}")
        self.position_jitter = position_jitter
        self.photos = list(photos or PHOTOS)
        for p in self.photos:
            if p not in PHOTOS:
                raise ValueError(f"unknown photo {p!r}; choose among {sorted(PHOTOS)} (data/photos.py PHOTOS)")
        self.num_frames, self.size = num_frames, size
        self.min_scale, self.max_scale = min_scale, max_scale
        self.speeds = tuple(speeds)
        self.pans = [Motion("pan", d, s) for d in PAN_DIRECTIONS for s in self.speeds]
        need = max((min_canvas(m, num_frames, size) for m in self.pans), default=size)
        if max_scale < need:
            raise ValueError(f"max_scale {max_scale} is too small for pans at {max(self.speeds)} px/frame over "
                             f"{num_frames} frames of {size} px: it needs at least {need}")
        if min_scale < size or min_scale > max_scale:
            raise ValueError(f"need {size} <= min_scale <= max_scale, got min_scale {min_scale}, max_scale {max_scale}")
        if not (0 <= p_static and 0 <= p_zoom and p_static + p_zoom <= 1):
            raise ValueError(f"p_static {p_static} and p_zoom {p_zoom} must be >= 0 and sum to at most 1")
        if not self.pans:
            raise ValueError("speeds must name at least one pan speed (px/frame) among " + str(list(SPEED_WORDS)))
        if zoom_ratio < 1:
            raise ValueError(f"zoom_ratio must be >= 1 (the region's side changes by this factor), got {zoom_ratio}")
        self.p_static, self.p_zoom, self.zoom_ratio = p_static, p_zoom, zoom_ratio
        self.caption_dropout, self.length, self.seed = caption_dropout, length, seed
        self.epoch = 0
        self._canvas: dict[tuple[str, int], np.ndarray] = {}

    def __len__(self) -> int:
        return self.length

    def canvas(self, name: str, scale: int) -> np.ndarray:
        key = (name, scale)
        if key not in self._canvas:
            self._canvas[key] = photo(name, scale)
        return self._canvas[key]

    def sample_spec(self, rng: np.random.Generator) -> ClipSpec:
        name = self.photos[int(rng.integers(len(self.photos)))]
        u = rng.random()
        size, f = self.size, self.num_frames
        if u < self.p_static:
            motion = Motion("static")
        elif u < self.p_static + self.p_zoom:
            motion = Motion("zoom", ZOOMS[int(rng.integers(2))])
        elif self.direction_per_photo:  # photo i of PHOTOS pans only in direction i (the curriculum's first stage)
            d = list(PAN_DIRECTIONS)[list(PHOTOS).index(name) % len(PAN_DIRECTIONS)]
            motion = Motion("pan", d, self.speeds[int(rng.integers(len(self.speeds)))])
        else:
            motion = self.pans[int(rng.integers(len(self.pans)))]
        lo = max(self.min_scale, min_canvas(motion, f, size))
        scale = int(rng.integers(lo, self.max_scale + 1))
        j = self.position_jitter
        if motion.kind == "zoom":  # the largest region: between the frame and zoom_ratio × the frame
            big = float(rng.uniform(size, min(scale, size * self.zoom_ratio)))
            if j is None:
                cx = float(rng.uniform(big / 2, scale - big / 2))
                cy = float(rng.uniform(big / 2, scale - big / 2))
            else:  # the canvas centre ± j
                cx, cy = (float(np.clip(scale / 2 + rng.uniform(-j, j), big / 2, scale - big / 2)) for _ in range(2))
            return ClipSpec(name, motion, scale, cx, cy, big)
        vx, vy = motion.camera_velocity
        tx, ty = abs(vx) * (f - 1), abs(vy) * (f - 1)
        if j is None:
            x = int(rng.integers(0, scale - size - tx + 1)) + (tx if vx < 0 else 0)
            y = int(rng.integers(0, scale - size - ty + 1)) + (ty if vy < 0 else 0)
        else:  # the window's path centred on the canvas centre, ± j px
            x, y = (int(np.clip(round((scale - size) / 2 - (f - 1) * v / 2 + rng.uniform(-j, j)),
                                (t if v < 0 else 0), scale - size - (0 if v < 0 else t)))
                    for v, t in ((vx, tx), (vy, ty)))
        return ClipSpec(name, motion, scale, x, y)

    def render(self, spec: ClipSpec) -> np.ndarray:
        canvas = self.canvas(spec.photo, spec.scale)
        if spec.motion.kind == "zoom":
            sides = zoom_sides(spec.zoom_side, spec.motion.direction, self.num_frames, self.zoom_ratio)
            return render_zoom(canvas, sides, spec.x0, spec.y0, self.size)
        return render_pan(canvas, spec.motion, int(spec.x0), int(spec.y0), self.num_frames, self.size)

    def __getitem__(self, idx: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, int(idx)])
        spec = self.sample_spec(rng)
        frames = self.render(spec)
        caption = "" if rng.random() < self.caption_dropout else motion_caption(spec.photo, spec.motion)
        return {"pixel_values": to_tensor(frames), "caption": caption, "photo": spec.photo,
                "motion": spec.motion.name, "displacement": torch.tensor(spec.motion.displacement),
                "scale": spec.scale}


class MotionClipDataModule(L.LightningDataModule):
    def __init__(self, photos: list[str] | None = None, num_frames: int = 8, size: int = 32, min_scale: int = 40,
                 max_scale: int = 56, speeds: list[int] = (1, 2, 3), p_static: float = 0.1, p_zoom: float = 0.15,
                 zoom_ratio: float = 1.4, caption_dropout: float = 0.1, batch_size: int = 4,
                 steps_per_epoch: int = 100, seed: int = 0, num_workers: int = 0, position_jitter: int | None = None,
                 direction_per_photo: bool = False):
        """
        Args:
            photos: names of `data.photos.PHOTOS` to film (None = all eight).
            num_frames: frames per clip.
            size: frame side in pixels (the world is 32×32).
            min_scale: smallest canvas side (the photo is `photo(name, S)`; 40 = the image world's scale).
            max_scale: largest canvas side (a 3 px/frame pan over 8 frames needs >= 53).
            speeds: pan speeds in px/frame (per moving axis), each with its caption word.
            p_static: probability of a still camera (the photo's plain caption).
            p_zoom: probability of a zoom (in or out, by `zoom_ratio` over the clip).
            zoom_ratio: total change of the zoom region's side over the clip.
            caption_dropout: probability of replacing a caption by "" (classifier-free guidance).
            batch_size: clips per step.
            steps_per_epoch: batches per epoch (the clips are random and unlimited).
            seed: clip randomness (with the epoch and index).
            num_workers: DataLoader workers (0 on a 2-core machine).
            position_jitter: None = the camera path anywhere on the canvas; k = the path centred on
                the canvas centre ± k px (zooms: the region's centre). A small k makes a caption name
                nearly one clip, so the caption's motion is visible in the clip the model must
                predict even at high noise, where a uniformly placed path averages out.
            direction_per_photo: every pan of photo i (the order of `data.photos.PHOTOS`) goes in pan
                direction i (speeds still random; the caption still names it). A curriculum's first
                stage: the photograph, which the world already tells apart, then decides which way
                its frames shift, so a frame-position input is useful on its own (with every
                direction for every photo it helps only together with the caption's direction words:
                a saddle for gradient descent).
        """
        super().__init__()
        self.save_hyperparameters()
        self.dataset = None
        # what a size check reads (`num_frames`, `height`, `width`)
        self.num_frames, self.height, self.width = num_frames, size, size

    def setup(self, stage=None):
        if self.dataset is None:
            hp = self.hparams
            self.dataset = MotionClips(hp.photos, hp.num_frames, hp.size, hp.min_scale, hp.max_scale, tuple(hp.speeds),
                                       hp.p_static, hp.p_zoom, hp.zoom_ratio, hp.caption_dropout,
                                       hp.steps_per_epoch * hp.batch_size, hp.seed, hp.position_jitter,
                                       hp.direction_per_photo)

    def train_dataloader(self):
        self.setup()
        if self.trainer is not None:
            self.dataset.epoch = self.trainer.current_epoch
        return DataLoader(self.dataset, batch_size=self.hparams.batch_size, shuffle=False,
                          num_workers=self.hparams.num_workers, drop_last=True)
