"""The tiny trained world: a pixel-space text-to-image diffusion model trained from scratch on CPU.

`WorldModule` (on the training base, `modules.training.TrainingModule`) trains a small
`UNet2DConditionModel` (3 channels in/out, no VAE) with a frozen, seeded random CLIP text encoder
and a word tokenizer built in memory, on SD's noise schedule with the ε-MSE objective, and writes a
diffusers-layout folder (`save_world`) that `modules.models.spec.load_model` loads (no `vae/` ⇒
pixel space). Data: `data.image_captions.ImageCaptionDataModule`; evaluation on the bundled pans:
`modules.world_eval`. Recipe: `configs/world/tiny.yaml`.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from diffusers import UNet2DConditionModel

from modules.models.tiny import sd_scheduler, tiny_text_encoder
from modules.models.tokenizer import build_word_tokenizer
from modules.training import TrainingModule

REPO_ROOT = Path(__file__).resolve().parents[1]


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
        save_dtype: Literal["float16", "bfloat16", "float32"] = "float16",
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
