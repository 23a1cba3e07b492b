"""The tiny trained world: a pixel-space text-to-image diffusion model trained from scratch on CPU.

`ImageCaptionDataModule` serves random 32×32 crops of captioned photos (by default the eight
scikit-image photographs of `data.photos`, resized to 40×40: the same geometry as the bundled pans,
whose frames are 32×32 windows of `photo(name, 40)`), with caption dropout for classifier-free
guidance. `WorldModule` trains a small `UNet2DConditionModel` (3 channels in/out, no VAE) with a
frozen, seeded random CLIP text encoder and a word tokenizer built in memory, on SD's noise
schedule with the ε-MSE objective, and writes a diffusers-layout folder (`save_world`) that
`modules.models.load_parts` loads (no `vae/` ⇒ pixel space). Recipe: `configs/world/tiny.yaml`.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from diffusers import UNet2DConditionModel
from torch.utils.data import DataLoader, Dataset

from modules.models.tiny import sd_scheduler, tiny_text_encoder
from modules.models.tokenizer import build_word_tokenizer
from modules.training import TrainingModule

REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------- data
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


# ----------------------------------------------------------------------------------------- model
@dataclass
class UNetConfig:
    """The pixel-space UNet: self-/cross-attention at 16×16 and 8×8 (and the 8×8 mid block).
    Note: diffusers' `attention_head_dim` is used as the *number* of heads; keep it small on CPU."""

    sample_size: int = 32
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    layers_per_block: int = 1
    attention_head_dim: int = 1
    norm_num_groups: int = 8


@dataclass
class TextConfig:
    hidden: int = 64
    max_length: int = 16
    seed: int = 0


def build_unet(cfg: UNetConfig, cross_attention_dim: int) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=cfg.sample_size, in_channels=3, out_channels=3,
        block_out_channels=tuple(cfg.block_out_channels), down_block_types=tuple(cfg.down_block_types),
        up_block_types=tuple(cfg.up_block_types), layers_per_block=cfg.layers_per_block,
        cross_attention_dim=cross_attention_dim, attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
    )


class WorldModule(TrainingModule):
    def __init__(
        self,
        unet: UNetConfig | None = None,
        text: TextConfig | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        warmup_steps: int = 50,
        total_steps: int = 1000,
        time_budget_s: float | None = None,
        min_lr_ratio: float = 0.05,
        ema_decay: float = 0.0,
        output_dir: str | None = None,
        save_dtype: str = "float16",
        seed: int = 0,
        noise: Literal["white"] = "white",
        grad_clip: float | None = 1.0,
        recipe: str = "",
    ):
        """
        Args:
            unet: UNet architecture (pixel space, 3 channels in/out).
            text: frozen random CLIP text encoder (hidden size, max tokens, init seed).
            lr: AdamW peak learning rate (linear warmup, then cosine to `min_lr_ratio`·lr).
            weight_decay: AdamW weight decay.
            warmup_steps: linear warmup steps.
            total_steps: length of the cosine schedule (set it to the trainer's `max_steps`).
            time_budget_s: if set, the cosine also advances with wall time (progress = max of the
                step and time fractions), so a run stopped by `max_time` on a busy machine still
                ends annealed (set it a little below the trainer's `max_time`).
            min_lr_ratio: final learning rate / peak.
            ema_decay: EMA of the UNet weights (0 = off); the EMA weights are the ones saved.
            output_dir: where `on_train_end` writes the diffusers folder (None = don't).
            save_dtype: dtype of the saved UNet weights (`float16` halves the size; loads as fp32).
            seed: seeds the UNet init and the training noise/timestep streams (the training base's
                `generator(stream)`: keyed on seed, iteration, rank and stream, so DDP ranks differ).
            noise: training noise sampler (the training base's switch).
            grad_clip: gradient-norm clipping when the trainer sets none (the recipes set
                `trainer.gradient_clip_val`).
            recipe: the config file the run came from (recorded in the model card).
        """
        super().__init__(seed=seed, noise=noise, grad_clip=grad_clip)
        unet = UNetConfig(**unet) if isinstance(unet, dict) else (unet or UNetConfig())
        text = TextConfig(**text) if isinstance(text, dict) else (text or TextConfig())
        self.unet_cfg, self.text_cfg = unet, text
        self.save_hyperparameters()
        from data.photos import PHOTOS

        self.tokenizer = build_word_tokenizer(
            [w for c in PHOTOS.values() for w in c.lower().split()], max_length=text.max_length)
        self.text_encoder = tiny_text_encoder(len(self.tokenizer), hidden=text.hidden, max_len=text.max_length,
                                              seed=text.seed).requires_grad_(False).eval()
        torch.manual_seed(seed)
        self.unet = build_unet(unet, cross_attention_dim=text.hidden)
        self.ema = None
        if ema_decay > 0:
            self.ema = copy.deepcopy(self.unet).requires_grad_(False).eval()
        self.scheduler = sd_scheduler()
        self.spec = self.world_spec()
        self._t0 = None
        self.wall_time = 0.0
        self.last_loss = float("nan")
        self._loss_window: list[float] = []

    def world_spec(self):
        """The `sd` family spec (pixel space: no VAE) around this module's parts; its
        `encode_prompt` is the one prompt-embedding cache."""
        from modules.models.families.sd import SDSpec

        return SDSpec(path="(in memory)", model_id="tiny-world", dtype=torch.float32, scheduler=self.scheduler,
                      unet=self.unet, vae=None, text_encoders=[self.text_encoder],
                      tokenizers=[self.tokenizer])

    def train(self, mode: bool = True):
        super().train(mode)
        self.text_encoder.eval()
        if self.ema is not None:
            self.ema.eval()
        return self

    # -- training
    def denoise_images(self, x: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        """ε̂ of images `(B, 3, H, W)` (the world is an image model; the spec's own denoiser takes videos)."""
        return self.unet(x, t, encoder_hidden_states=cond["encoder_hidden_states"]).sample

    def training_step(self, batch, batch_idx):
        x0 = batch["pixel_values"]
        cond = self.spec.encode_prompt(list(batch["caption"])).to(x0.device)
        loss, _ = self.diffusion_loss(x0, cond, denoiser=self.denoise_images)
        self.check_finite(loss, {"diffusion": loss})
        self.log_terms(loss, {"diffusion": loss}, batch_size=x0.shape[0])
        self._loss_window = (self._loss_window + [float(loss.detach())])[-50:]
        return loss

    def on_train_start(self):
        self._t0 = time.time() - self.wall_time

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.ema is not None:
            n = self.global_step
            d = min(self.hparams.ema_decay, (1 + n) / (10 + n))
            with torch.no_grad():
                for pe, p in zip(self.ema.parameters(), self.unet.parameters()):
                    pe.lerp_(p.detach(), 1 - d)
        if self._t0 is not None:
            self.wall_time = time.time() - self._t0

    # -- checkpoints (the training base keeps the trainable UNet): the EMA and the clock travel too
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.ema is not None:
            checkpoint["ema_state"] = self.ema.state_dict()
        checkpoint["wall_time"] = self.wall_time

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.ema is not None and "ema_state" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema_state"])
        self.wall_time = float(checkpoint.get("wall_time", 0.0))

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.unet.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)

        def lr_lambda(step):
            if step < hp.warmup_steps:
                return (step + 1) / hp.warmup_steps
            frac = (step - hp.warmup_steps) / max(1, hp.total_steps - hp.warmup_steps)
            if hp.time_budget_s and self._t0 is not None:
                frac = max(frac, (time.time() - self._t0) / hp.time_budget_s)
            frac = min(1.0, frac)
            return hp.min_lr_ratio + (1 - hp.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_end(self):
        self.last_loss = float(np.mean(self._loss_window)) if self._loss_window else float("nan")
        if self.hparams.output_dir:
            self.save_world(self.hparams.output_dir)

    # -- export
    @property
    def final_unet(self) -> UNet2DConditionModel:
        return self.ema if self.ema is not None else self.unet

    def save_world(self, path: str | Path) -> Path:
        """Write the diffusers layout: unet/, text_encoder/, tokenizer/, scheduler/,
        model_index.json and a README.md model card."""
        path = Path(path)
        if not path.is_absolute():
            path = REPO_ROOT / path
        path.mkdir(parents=True, exist_ok=True)
        unet = copy.deepcopy(self.final_unet).to(getattr(torch, self.hparams.save_dtype)).cpu()
        unet.save_pretrained(path / "unet", safe_serialization=True)
        self.text_encoder.save_pretrained(path / "text_encoder", safe_serialization=True)
        self.tokenizer.save_pretrained(path / "tokenizer")
        self.scheduler.save_pretrained(path / "scheduler")
        steps = int(self.global_step)
        info = {
            "_class_name": "StableDiffusionPipeline", "_name_or_path": "tiny-world",
            "unet": ["diffusers", "UNet2DConditionModel"], "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "PreTrainedTokenizerFast"], "scheduler": ["diffusers", "DDIMScheduler"],
            "vae": [None, None],
            "training": {"steps": steps, "final_loss": round(self.last_loss, 5), "wall_time_s": round(self.wall_time, 1),
                         "seed": self.hparams.seed, "recipe": self.hparams.recipe},
        }
        (path / "model_index.json").write_text(json.dumps(info, indent=2) + "\n")
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        n_params = sum(p.numel() for p in self.final_unet.parameters())
        batch = getattr(getattr(self.trainer, "datamodule", None), "hparams", {}) if self._trainer else {}
        card = f"""# tiny-world

A pixel-space text-to-image diffusion model (no VAE: 32×32 RGB in [-1, 1]) trained from scratch on
CPU on the eight scikit-image photographs of `data/photos.py` (random 32×32 windows of the photos
resized to 40×40, the geometry of the bundled pans in `data/samples/`), with caption dropout 0.1
for classifier-free guidance. Load it with `modules.models.load_parts("tiny-world")`.

- recipe: `python -m train fit -c {self.hparams.recipe or 'configs/world/tiny.yaml'}`
- seed: {self.hparams.seed}
- steps: {steps} (batch {dict(batch).get('batch_size', '?')})
- final loss (ε-MSE, mean of the last 50 steps): {self.last_loss:.4f}
- wall time: {self.wall_time / 60:.1f} min of training
- UNet: {n_params / 1e6:.2f} M parameters, {json.dumps(asdict(self.unet_cfg))}; weights saved as {self.hparams.save_dtype}
  (load_parts gives fp32); EMA decay {self.hparams.ema_decay}
- text encoder: frozen random CLIP text model ({json.dumps(asdict(self.text_cfg))}), word-level tokenizer
- scheduler: Stable Diffusion 1.x's (scaled-linear betas 0.00085–0.012, 1000 steps), DDIM sampling
- optimiser: AdamW lr {self.hparams.lr}, weight decay {self.hparams.weight_decay}, {self.hparams.warmup_steps} warmup steps, cosine to {self.hparams.min_lr_ratio}·lr over {self.hparams.total_steps} steps
- folder size: {size / 1e6:.1f} MB

Claims measured on these weights: see `docs/world.md` and `tests/test_world_claims.py`.
"""
        (path / "README.md").write_text(card)
        return path


# ------------------------------------------------------------------------------ evaluation helpers
# Shared by tests/test_world_claims.py and scripts/world_results.py (numbers in docs/world.md).
PAN_Y = 4  # the bundled pans at 32×32: frame n is the window of photo(name, 40) at (y=4, x=n)


def photo_windows(names: list[str] | None = None, size: int = 40, crop: int = 32) -> tuple[torch.Tensor, list[str]]:
    """Every `crop`×`crop` window of each training photo: `(P, size-crop+1, size-crop+1, 3, crop, crop)`
    in [-1, 1] (indexed `[photo, y, x]`), and the photo names."""
    from data.photos import PHOTOS, photo

    names = list(names or PHOTOS)
    imgs = torch.stack([torch.from_numpy(photo(n, size)).permute(2, 0, 1).float() / 127.5 - 1 for n in names])
    win = imgs.unfold(2, crop, 1).unfold(3, crop, 1)  # (P, 3, Y, X, crop, crop)
    return win.permute(0, 2, 3, 1, 4, 5).contiguous(), names


def load_pan(name: str, num_frames: int = 8, size: int = 32) -> torch.Tensor:
    """The bundled pan over photo `name` as `(1, 3, F, size, size)` in [-1, 1]."""
    from data.clip_dataset import ClipDataset
    from data.photos import PHOTOS

    ds = ClipDataset(f"samples/pan_{name}.mp4", prompt=PHOTOS[name], num_frames=num_frames, height=size, width=size)
    return ds[0]["pixel_values"][None]


def classify_frames(frames: torch.Tensor, aligned: bool = True, windows=None) -> tuple[list[str], torch.Tensor]:
    """Nearest training photo of each frame of a pan-shaped video `(3, F, 32, 32)` or `(1, 3, F, 32, 32)`
    by pixel L2 in [-1, 1]. `aligned=True`: frame n is compared with the window of every photo at
    the pan's position (y=4, x=n) — the rule of the edit claims; `aligned=False`: with the best
    window of every photo (any position). Returns (names per frame, distances (F, P))."""
    wins, names = windows if windows is not None else photo_windows()
    v = frames[0] if frames.ndim == 5 else frames
    v = v.float().transpose(0, 1)  # (F, 3, H, W)
    dists = []
    for n, f in enumerate(v):
        if aligned:
            ref = wins[:, PAN_Y, min(n, wins.shape[2] - 1)]  # (P, 3, h, w)
            dists.append(((ref - f) ** 2).flatten(1).mean(1))
        else:
            d = ((wins - f) ** 2).flatten(3).mean(3)  # (P, Y, X)
            dists.append(d.flatten(1).min(1).values)
    d = torch.stack(dists)
    return [names[i] for i in d.argmin(1).tolist()], d


def pan_tracking(frames: torch.Tensor, name: str, windows=None) -> float:
    """Fraction of frames whose best-matching window of photo `name` (any position) is the pan's
    window (y=4, x=n): 1.0 means the video shows that photo *moving with the pan*."""
    wins, names = windows if windows is not None else photo_windows()
    w = wins[names.index(name)]  # (Y, X, 3, h, w)
    v = (frames[0] if frames.ndim == 5 else frames).float().transpose(0, 1)
    hits = 0
    for n, f in enumerate(v):
        d = ((w - f) ** 2).flatten(2).mean(2)  # (Y, X)
        y, x = divmod(int(d.argmin()), d.shape[1])
        hits += int(y == PAN_Y and x == n)
    return hits / v.shape[0]


def pan_flow(num_frames: int = 8, size: int = 32) -> np.ndarray:
    """Ground-truth flow of the bundled pans at `size`: content moves 1 px left per frame."""
    flow = np.zeros((num_frames - 1, size, size, 2), np.float32)
    flow[..., 0] = -1.0 * size / 32
    return flow


def flicker(video: torch.Tensor) -> float:
    """Mean absolute difference (in [0, 1] units) between consecutive frames after undoing the pan
    (frame n+1 shifted right by 1 px, compared on the overlap)."""
    v = ((video[0] if video.ndim == 5 else video).float() + 1) / 2  # (3, F, H, W)
    return float((v[:, :-1, :, 1:] - v[:, 1:, :, :-1]).abs().mean())


def image_denoiser(unet):
    """`(z (B,3,H,W), t, cond) -> eps` for DDIMLoop on plain images."""
    return lambda z, t, cond: unet(z, t, encoder_hidden_states=cond).sample


@torch.no_grad()
def sample_images(parts, prompts: list[str], seeds: list[int], num_steps: int = 25, guidance_scale: float = 4.0,
                  size: int = 32) -> torch.Tensor:
    """Text-to-image samples `(len(prompts) * len(seeds), 3, size, size)` in [-1, 1], prompt-major."""
    from modules.sampling import DDIMLoop

    noise = torch.stack([torch.randn(3, size, size, generator=torch.Generator().manual_seed(s)) for s in seeds])
    zT = noise.repeat(len(prompts), 1, 1, 1)
    emb = parts.encode_prompt(prompts)["encoder_hidden_states"].repeat_interleave(len(seeds), 0)
    null = parts.encode_prompt([""])["encoder_hidden_states"].expand_as(emb)
    loop = DDIMLoop(image_denoiser(parts.unet), parts.scheduler, num_steps, progress=False)
    return loop.sample(zT, emb, uncond=null, guidance_scale=guidance_scale).clamp(-1, 1)


def edit_pan(parts, source: str, targets: list[str], frame_attention: str = "per_frame", num_steps: int = 20,
             guidance_scale: float = 4.0, reconstruct: bool = True, video_unet=None):
    """Invert the bundled pan over photo `source` with its caption and re-sample it with the captions
    of `targets` (CFG `guidance_scale`) under `frame_attention`. Returns the EditResult."""
    from data.photos import PHOTOS
    from modules.editing import EditConfig, edit_clip

    if video_unet is None:
        parts.inflate(frame_attention, temporal=False)
    else:
        video_unet.set_frame_attention(frame_attention)
        parts.model = video_unet
    cfg = EditConfig(edit_prompts=[PHOTOS[t] for t in targets], num_inference_steps=num_steps,
                     guidance_scale=guidance_scale, reconstruct=reconstruct)
    return edit_clip(parts, load_pan(source), PHOTOS[source], cfg, progress=False)


# The claims' fixed protocol (chosen before measuring; see docs/world.md).
EDIT_SOURCES = ["astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry", "retina"]
"""Sources of the edit claims: every photo except hubble_deep_field (near-black galaxies: its
inversion carries almost no structure for another caption to keep; excluded in advance, as the
prototype's galaxy-source edits failed)."""
FRAME_MODES = ("per_frame", "first", "sparse_causal")


def edit_pairs(seed: int) -> list[tuple[str, str]]:
    """Pairs (source, target) of seed `seed`: each source in EDIT_SOURCES with one target among the
    other seven photos, drawn with `random.Random(seed)`. Seed 0 is the classification claim's set."""
    import random

    from data.photos import PHOTOS

    rng = random.Random(seed)
    return [(s, rng.choice([t for t in PHOTOS if t != s])) for s in EDIT_SOURCES]


@torch.no_grad()
def edit_study(parts, seeds=(0, 1, 2), modes=FRAME_MODES, num_steps: int = 20, guidance_scale: float = 4.0,
               log=print) -> dict:
    """Edit every pair of every seed under every frame-attention mode; per (mode, seed): fraction of
    frames classified (aligned nearest photo) as the target, pan tracking of the target, flicker,
    warping error (ground-truth pan flow), and the reconstruction PSNR. One inversion per
    (source, mode) serves all of that source's targets."""
    from modules.metrics import psnr, warping_error

    wins = photo_windows()
    flow = pan_flow()
    video_unet = parts.inflate(modes[0], temporal=False)
    pairs = {s: edit_pairs(s) for s in seeds}
    rows, videos = [], {}
    for mode in modes:
        for src in EDIT_SOURCES:
            targets = sorted({t for s in seeds for (a, t) in pairs[s] if a == src})
            t0 = time.time()
            res = edit_pan(parts, src, targets, mode, num_steps, guidance_scale, reconstruct=True, video_unet=video_unet)
            rec_psnr = psnr(res.source[0], res.reconstruction[0]).tolist()
            from data.photos import PHOTOS

            videos[(mode, src)] = {"source": res.source, "reconstruction": res.reconstruction,
                                   **{t: res.edits[PHOTOS[t]] for t in targets}}

            for tgt in targets:
                vid = res.edits[PHOTOS[tgt]]
                labels, _ = classify_frames(vid, windows=wins)
                rows.append({
                    "mode": mode, "source": src, "target": tgt,
                    "target_frames": sum(lab == tgt for lab in labels) / len(labels),
                    "tracking": pan_tracking(vid, tgt, windows=wins),
                    "flicker": flicker(vid),
                    "warp_error": warping_error(res.source[0], vid[0], flow)[0],
                    "recon_psnr_min": min(rec_psnr),
                })
            log(f"{mode:14s} {src:22s} -> {targets}  recon min {min(rec_psnr):.1f} dB  ({time.time() - t0:.0f}s)")
    summary = {}
    for mode in modes:
        for s in seeds:
            sel = [r for r in rows if r["mode"] == mode and (r["source"], r["target"]) in pairs[s]]
            summary[f"{mode}/seed{s}"] = {k: float(np.mean([r[k] for r in sel]))
                                          for k in ("target_frames", "tracking", "flicker", "warp_error", "recon_psnr_min")}
    return {"rows": rows, "summary": summary, "videos": videos, "pairs": {s: pairs[s] for s in seeds},
            "num_steps": num_steps, "guidance_scale": guidance_scale}
