"""Training data for conditional restoration (METHODS.md §3): super-resolution and inpainting.

Images come from one of
- nothing (`source: null`): the eight scikit-image photographs of `data.photos` with their captions
  (the tiny world's data);
- an image folder: `metadata.jsonl` lines `{"image": file, "caption": text}`, or, without it, every
  `*.png/jpg/jpeg/webp/bmp` in the folder (empty captions);
- video clips (a video file with a prompt, or a clip folder, as `data.clip_dataset.load_clips` reads
  them): each item is one random frame of a random clip.

Each item (deterministic per (seed, epoch, index); nothing is cached but the photographs'
decoded originals): the image with its shorter side resized to `resize`, a random `size`×`size`
crop, and, built on the fly,
- `super_resolution`: `low_res`, the crop downsampled by `scale` (bicubic, antialiased);
- `inpainting`: `mask` `(1, size, size)`, 1 = regenerate: a rectangle, brush strokes or an outpainting
  frame, or the whole image (`MaskConfig`: 25% full masks by default).
SDXL's added conditions come with every item: `original_size` (before resizing) and
`crop_top_left` (in the resized image), as diffusers' SDXL training script computes them.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
TASKS = ("super_resolution", "inpainting")


@dataclass
class MaskConfig:
    """Relative frequencies of the inpainting mask kinds (normalised to sum 1).

    Args:
        full: the whole image (unconditional generation in the inpainting layout; 25% as diffusers'
            and SD-inpainting's training).
        rectangle: one rectangle, each side 20–70% of the image.
        brush: 1–4 thick random polyline strokes.
        outpaint: everything outside a kept rectangle (each side 40–80% of the image).
    """

    full: float = 0.25
    rectangle: float = 0.25
    brush: float = 0.25
    outpaint: float = 0.25

    def probabilities(self) -> list[tuple[str, float]]:
        items = [(k, float(getattr(self, k))) for k in ("full", "rectangle", "brush", "outpaint")]
        total = sum(p for _, p in items)
        if any(p < 0 for _, p in items) or total <= 0:
            raise ValueError(f"data.init_args.masks: frequencies must be >= 0 and not all 0, got {dict(items)}")
        return [(k, p / total) for k, p in items]


def _uniform(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


def random_mask(height: int, width: int, generator: torch.Generator, masks: MaskConfig | None = None,
                kind: str | None = None) -> tuple[torch.Tensor, str]:
    """`((1, height, width) float mask, kind)`, 1 = regenerate, 0 = keep."""
    import cv2

    masks = masks or MaskConfig()
    if kind is None:
        u, acc = _uniform(generator), 0.0
        probs = masks.probabilities()
        kind = probs[-1][0]
        for k, p in probs:
            acc += p
            if u < acc:
                kind = k
                break
    m = np.zeros((height, width), np.uint8)
    if kind == "full":
        m[:] = 1
    elif kind == "rectangle":
        rh, rw = max(1, round(height * _uniform(generator, 0.2, 0.7))), max(1, round(width * _uniform(generator, 0.2, 0.7)))
        y, x = _randint(generator, 0, height - rh), _randint(generator, 0, width - rw)
        m[y:y + rh, x:x + rw] = 1
    elif kind == "brush":
        side = min(height, width)
        for _ in range(_randint(generator, 1, 4)):
            thick = max(1, round(side * _uniform(generator, 1 / 16, 1 / 6)))
            pts = [(_randint(generator, 0, width - 1), _randint(generator, 0, height - 1))]
            for _ in range(_randint(generator, 1, 5)):
                ang, length = _uniform(generator, 0, 2 * math.pi), side * _uniform(generator, 0.1, 0.4)
                x = int(np.clip(pts[-1][0] + length * math.cos(ang), 0, width - 1))
                y = int(np.clip(pts[-1][1] + length * math.sin(ang), 0, height - 1))
                pts.append((x, y))
            for a, b in zip(pts[:-1], pts[1:]):
                cv2.line(m, a, b, 1, thickness=thick)
    elif kind == "outpaint":
        kh, kw = max(1, round(height * _uniform(generator, 0.4, 0.8))), max(1, round(width * _uniform(generator, 0.4, 0.8)))
        y, x = _randint(generator, 0, height - kh), _randint(generator, 0, width - kw)
        m[:] = 1
        m[y:y + kh, x:x + kw] = 0
    else:
        raise ValueError(f"unknown mask kind {kind!r}; one of full, rectangle, brush, outpaint")
    return torch.from_numpy(m).float()[None], kind


def downsample(pixels: torch.Tensor, scale: int) -> torch.Tensor:
    """`(..., 3, H, W)` in [-1, 1] -> `(..., 3, H/scale, W/scale)`: bicubic with antialiasing."""
    h, w = pixels.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"image {h}×{w} is not divisible by the super-resolution scale {scale}; "
                         f"choose data.init_args.size as a multiple of {scale}")
    x = pixels.reshape(-1, *pixels.shape[-3:])
    out = F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)
    return out.clamp(-1, 1).reshape(*pixels.shape[:-2], h // scale, w // scale)


# -- image sources (read on demand) -----------------------------------------------------------------
class _Source:
    """`len(source)` records; `source.read(i, generator)` -> (uint8 (H, W, 3) RGB, caption)."""

    def __len__(self) -> int: ...

    def read(self, i: int, generator: torch.Generator) -> tuple[np.ndarray, str]: ...


class PhotoSource(_Source):
    def __init__(self):
        from data.photos import PHOTOS

        self.names = list(PHOTOS)
        self.captions = [PHOTOS[n] for n in self.names]

    def __len__(self):
        return len(self.names)

    def read(self, i, generator):
        from data.photos import center_square, _load

        return center_square(_load(self.names[i])), self.captions[i]


class ImageFolderSource(_Source):
    def __init__(self, records: list[tuple[Path, str]]):
        self.records = records

    @classmethod
    def from_folder(cls, folder: Path) -> "ImageFolderSource":
        meta = folder / "metadata.jsonl"
        if meta.is_file():
            records = []
            for n, line in enumerate(meta.read_text(encoding="utf-8-sig").splitlines(), 1):
                if not line.strip():
                    continue
                rec = json.loads(line)
                if not isinstance(rec, dict) or not isinstance(rec.get("image"), str):
                    raise ValueError(f"{meta}:{n}: each line needs an 'image' path (and optionally 'caption'), got {line[:80]!r}")
                records.append((folder / rec["image"], str(rec.get("caption", ""))))
        else:
            records = [(p, "") for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not records:
            raise ValueError(f"image folder {folder} has no metadata.jsonl and no {'/'.join(IMAGE_SUFFIXES)} images")
        for p, _ in records:
            if not p.is_file():
                raise FileNotFoundError(f"image {p} listed in {meta} does not exist; fix the path (relative to {folder})")
        return cls(records)

    def __len__(self):
        return len(self.records)

    def read(self, i, generator):
        import cv2

        path, caption = self.records[i]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read image {path} (not an image cv2 decodes)")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), caption


class ClipFrameSource(_Source):
    def __init__(self, source: str, prompt: str | None):
        from data.clip_dataset import load_clips
        from data.video_io import num_video_frames

        self.clips = load_clips(source, prompt)
        self.frames = [num_video_frames(c.video) for c in self.clips]

    def __len__(self):
        return len(self.clips)

    def read(self, i, generator):
        from data.video_io import read_video

        k = _randint(generator, 0, self.frames[i] - 1)
        return read_video(self.clips[i].video, num_frames=1, start=k)[0], self.clips[i].prompt


def open_source(source: str | None, prompt: str | None = None) -> _Source:
    if source is None:
        return PhotoSource()
    p = Path(source).expanduser()
    if not p.is_absolute() and not p.exists() and (REPO_ROOT / p).exists():
        p = REPO_ROOT / p
    if p.is_dir() and not (p / "videos.txt").is_file() and not _lists_videos(p / "metadata.jsonl"):
        return ImageFolderSource.from_folder(p)
    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFolderSource([(p, prompt or "")])
    return ClipFrameSource(str(source), prompt)


def _lists_videos(meta: Path) -> bool:
    if not meta.is_file():
        return False
    for line in meta.read_text(encoding="utf-8-sig").splitlines():
        if line.strip():
            rec = json.loads(line)
            return isinstance(rec, dict) and "video" in rec
    return False


# -- the dataset ------------------------------------------------------------------------------------
def _resize_shorter(img: np.ndarray, side: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = side / min(h, w)
    nh, nw = max(side, round(h * s)), max(side, round(w * s))
    if (nh, nw) == (h, w):
        return img
    return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)


class RestorationDataset(Dataset):
    """`length` items of random crops with their conditioning inputs (see the module docstring)."""

    def __init__(self, source: _Source, task: str, size: int, resize: int | None = None, scale: int | None = None,
                 masks: MaskConfig | None = None, caption_dropout: float = 0.0, length: int = 1000, seed: int = 0):
        if task not in TASKS:
            raise ValueError(f"data.init_args.task must be one of {TASKS}, got {task!r}")
        if task == "super_resolution" and not scale:
            raise ValueError("data.init_args.scale is required for super_resolution (8 for latent models, 4 for the "
                             "pixel world): the factor the low-res inputs are downsampled by")
        if task == "super_resolution" and size % scale:
            raise ValueError(f"data.init_args.size {size} is not a multiple of the super-resolution scale {scale}")
        self.source, self.task, self.size, self.resize, self.scale = source, task, int(size), int(resize or size), scale
        if self.resize < self.size:
            raise ValueError(f"data.init_args.resize ({resize}) must be >= size ({size}): images are resized, then cropped")
        masks = MaskConfig(**masks) if isinstance(masks, dict) else (masks or MaskConfig())
        self.masks, self.caption_dropout, self.length, self.seed = masks, caption_dropout, length, seed
        self.masks.probabilities()  # validates
        self.epoch = 0

    def __len__(self):
        return self.length

    def generator(self, idx: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch * 7_919 + idx) % (2**63 - 1))

    def __getitem__(self, idx: int) -> dict:
        g = self.generator(idx)
        i = _randint(g, 0, len(self.source) - 1)
        img, caption = self.source.read(i, g)
        h0, w0 = img.shape[:2]
        img = _resize_shorter(img, self.resize)
        h, w = img.shape[:2]
        y, x = _randint(g, 0, h - self.size), _randint(g, 0, w - self.size)
        crop = np.ascontiguousarray(img[y:y + self.size, x:x + self.size])
        px = torch.from_numpy(crop).permute(2, 0, 1).float() / 127.5 - 1
        if self.caption_dropout and _uniform(g) < self.caption_dropout:
            caption = ""
        item = {"pixel_values": px, "caption": caption, "index": i,
                "original_size": torch.tensor([h0, w0]), "crop_top_left": torch.tensor([y, x])}
        if self.task == "super_resolution":
            item["low_res"] = downsample(px, self.scale)
        else:
            item["mask"], _ = random_mask(self.size, self.size, g, self.masks)
        return item


class RestorationDataModule(L.LightningDataModule):
    def __init__(self, task: Literal["super_resolution", "inpainting"] = "super_resolution", source: str | None = None,
                 prompt: str | None = None, size: int = 32, resize: int | None = 40, scale: int | None = None,
                 masks: MaskConfig | None = None, caption_dropout: float = 0.1, batch_size: int = 8,
                 steps_per_epoch: int = 100, val_items: int = 4, seed: int = 0, num_workers: int = 0):
        """
        Args:
            task: `super_resolution` (items carry `low_res`) or `inpainting` (items carry `mask`);
                must match the model's task.
            source: None (the scikit-image photographs), an image folder, an image file, a video
                file or a clip folder (see the module docstring).
            prompt: caption of a single video or image file (a folder's come from its manifest).
            size: side of the square training crops (pixels).
            resize: the shorter image side is resized to this before cropping (None: `size`).
            scale: super-resolution factor, required for `super_resolution` (×8 for latent models, ×4
                for the pixel world; the model's `scale` must agree).
            masks: relative frequencies of the inpainting masks (25% full by default).
            caption_dropout: probability of an empty caption (classifier-free guidance).
            batch_size: items per step.
            steps_per_epoch: batches per epoch (items are random crops; the data are unbounded).
            val_items: fixed validation items (their own seed, no caption dropout).
            seed: crop, mask and caption randomness (with the epoch and the index).
            num_workers: DataLoader workers.
        """
        super().__init__()
        self.save_hyperparameters()
        self.train_set: RestorationDataset | None = None
        self.val_set: RestorationDataset | None = None

    def setup(self, stage=None):
        if self.train_set is not None:
            return
        hp = self.hparams
        source = open_source(hp.source, hp.prompt)
        common = dict(task=hp.task, size=hp.size, resize=hp.resize, scale=hp.scale, masks=hp.masks)
        self.train_set = RestorationDataset(source, **common, caption_dropout=hp.caption_dropout,
                                            length=hp.steps_per_epoch * hp.batch_size, seed=hp.seed)
        self.val_set = RestorationDataset(source, **common, caption_dropout=0.0, length=hp.val_items,
                                          seed=hp.seed + 7_777_777)

    def train_dataloader(self):
        self.setup()
        if self.trainer is not None:
            self.train_set.epoch = self.trainer.current_epoch
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=False,
                          num_workers=self.hparams.num_workers, drop_last=True)

    def val_dataloader(self):
        self.setup()
        return DataLoader(self.val_set, batch_size=max(1, min(self.hparams.batch_size, self.hparams.val_items)),
                          shuffle=False, num_workers=self.hparams.num_workers)

    def predict_dataloader(self):
        return self.val_dataloader()
