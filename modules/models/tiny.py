"""Tiny presets: small random SD-style models built from configs, saved in diffusers layout and
loaded back through `load_parts` like real weights (tests, CPU demo, CI)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from modules.models.tokenizer import build_word_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_SD_VERSION = "tiny-sd-v1"


def cache_dir() -> Path:
    return Path(os.environ.get("VIDTUNE_CACHE", Path.home() / ".cache" / "vidtune"))


def sd_scheduler() -> DDIMScheduler:
    """Stable Diffusion 1.x's noise schedule with DDIM sampling."""
    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000,
    )


def tiny_text_encoder(vocab_size: int, hidden: int = 32, max_len: int = 16, seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=max_len, pad_token_id=0, bos_token_id=2, eos_token_id=3,
    )
    return CLIPTextModel(cfg)


def build_tiny_sd(path: str | Path | None = None, seed: int = 0) -> Path:
    """A latent SD-shaped model (VAE ×2 downsampling, 4 latent channels, cross-attention at two
    resolutions). Built once per cache folder; deterministic for a seed."""
    path = Path(path) if path else cache_dir() / TINY_SD_VERSION
    if (path / "unet" / "config.json").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".build-"))
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8, sample_size=32,
    )
    tokenizer = build_word_tokenizer()
    text_encoder = tiny_text_encoder(len(tokenizer), seed=seed)
    unet.save_pretrained(tmp / "unet")
    vae.save_pretrained(tmp / "vae")
    text_encoder.save_pretrained(tmp / "text_encoder")
    tokenizer.save_pretrained(tmp / "tokenizer")
    sd_scheduler().save_pretrained(tmp / "scheduler")
    (tmp / "model_index.json").write_text('{"_name_or_path": "%s"}\n' % TINY_SD_VERSION)
    try:
        os.replace(tmp, path)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def world_path() -> Path:
    """The tiny trained pixel-space world committed with the repo (see configs/world/tiny.yaml)."""
    path = REPO_ROOT / "assets" / "world"
    if not (path / "unet").is_dir():
        raise FileNotFoundError(
            f"The tiny world weights are missing at {path}; train them with "
            "`python -m train fit -c configs/world/tiny.yaml`."
        )
    return path
