"""The tiny world's training data: random crops of captioned photographs.

`ImageCaptionDataModule` serves random 32×32 crops of captioned photos (by default the eight
scikit-image photographs of `data.photos`, resized to 40×40: the same geometry as the bundled pans,
whose frames are 32×32 windows of `photo(name, 40)`), with caption dropout for classifier-free
guidance. The model that trains on them: `modules.world.WorldModule`; recipe `configs/world/tiny.yaml`.
"""
from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_captioned_images(folder: str | None = None, size: int = 40) -> tuple[list[np.ndarray], list[str], list[str]]:
    """`(images uint8 (size,size,3), captions, names)`: `data.photos.PHOTOS` if `folder` is None,
    else the images listed in `<folder>/metadata.jsonl` (lines `{"image": file, "caption": text}`),
    centre-cropped to a square and resized to `size`."""
    from data.photos import PHOTOS, center_square, photo

    if folder is None:
        names = list(PHOTOS)
        return [photo(n, size) for n in names], [PHOTOS[n] for n in names], names
    import cv2

    root = Path(folder)
    if not root.is_absolute() and not root.exists():
        root = REPO_ROOT / root
    meta = root / "metadata.jsonl"
    if not meta.exists():
        raise FileNotFoundError(f"{meta} not found: an image folder needs metadata.jsonl with {{'image','caption'}} lines")
    images, captions, names = [], [], []
    for line in meta.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        bgr = cv2.imread(str(root / rec["image"]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read image {root / rec['image']}")
        sq = center_square(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        interp = cv2.INTER_AREA if size < sq.shape[0] else cv2.INTER_CUBIC
        images.append(cv2.resize(sq, (size, size), interpolation=interp))
        captions.append(rec["caption"])
        names.append(Path(rec["image"]).stem)
    return images, captions, names


class RandomCropCaptions(Dataset):
    """`length` random `crop`×`crop` windows of the images (uniform offsets), each with its caption
    (replaced by "" with probability `caption_dropout`). Deterministic per (seed, epoch, index)."""

    def __init__(self, images, captions, crop: int = 32, length: int = 1024, caption_dropout: float = 0.1,
                 hflip: bool = False, seed: int = 0):
        self.images = torch.stack([torch.from_numpy(np.asarray(i)).permute(2, 0, 1).float() / 127.5 - 1 for i in images])
        self.captions = list(captions)
        self.crop, self.length, self.caption_dropout, self.hflip, self.seed = crop, length, caption_dropout, hflip, seed
        self.epoch = 0
        if self.images.shape[-1] < crop or self.images.shape[-2] < crop:
            raise ValueError(f"images {tuple(self.images.shape[-2:])} are smaller than the crop {crop}")

    def __len__(self):
        return self.length

    def __getitem__(self, idx):
        g = torch.Generator().manual_seed(hash((self.seed, self.epoch, idx)) & 0x7FFFFFFF)
        i = int(torch.randint(len(self.captions), (1,), generator=g))
        h, w = self.images.shape[-2:]
        y = int(torch.randint(h - self.crop + 1, (1,), generator=g))
        x = int(torch.randint(w - self.crop + 1, (1,), generator=g))
        img = self.images[i, :, y : y + self.crop, x : x + self.crop]
        if self.hflip and float(torch.rand((), generator=g)) < 0.5:
            img = img.flip(-1)
        cap = "" if float(torch.rand((), generator=g)) < self.caption_dropout else self.captions[i]
        return {"pixel_values": img.contiguous(), "caption": cap, "index": i}


class ImageCaptionDataModule(L.LightningDataModule):
    def __init__(self, folder: str | None = None, image_size: int = 40, crop: int = 32, batch_size: int = 32,
                 steps_per_epoch: int = 200, caption_dropout: float = 0.1, hflip: bool = False, seed: int = 0,
                 num_workers: int = 0):
        """
        Args:
            folder: image folder with `metadata.jsonl` ({"image", "caption"} per line); None = the
                scikit-image photographs of `data.photos` with their captions.
            image_size: images are centre-cropped to a square and resized to this size.
            crop: side of the random training windows (the pans are 32×32 windows of 40×40 photos).
            batch_size: windows per step.
            steps_per_epoch: batches per epoch (the data are infinite random crops).
            caption_dropout: probability of replacing a caption by "" (classifier-free guidance).
            hflip: random horizontal flips (off: the pans must stay recognisable).
            seed: crop/dropout randomness (with the epoch).
        """
        super().__init__()
        self.save_hyperparameters()
        self.dataset = None

    def setup(self, stage=None):
        if self.dataset is None:
            hp = self.hparams
            images, captions, self.names = load_captioned_images(hp.folder, hp.image_size)
            self.dataset = RandomCropCaptions(images, captions, hp.crop, hp.steps_per_epoch * hp.batch_size,
                                              hp.caption_dropout, hp.hflip, hp.seed)

    def train_dataloader(self):
        self.setup()
        if self.trainer is not None:
            self.dataset.epoch = self.trainer.current_epoch
        return DataLoader(self.dataset, batch_size=self.hparams.batch_size, shuffle=False,
                          num_workers=self.hparams.num_workers, drop_last=True)

    @property
    def captions(self) -> list[str]:
        self.setup()
        return self.dataset.captions
