"""Tiny presets: small random models of every family, built from configs in code (no downloads),
saved once in diffusers layout (with a `model_index.json` naming the pipeline) under the cache
folder, and loaded back through `load_model` like a user's folder (tests, CPU demos, CI).

Folder names carry a version: change a builder -> bump its version, and the cache rebuilds.
`tiny-world` is the trained pixel-space world committed with the repo (`assets/world`);
`tiny-video-world` its trained text-to-video counterpart (`assets/video_world`, family `unet3d`).
`tiny-world-inpaint` and `tiny-world-sr` are the world fine-tuned with GP noise for inpainting and ×4
super-resolution (`assets/world_inpaint`, `assets/world_sr`; docs/gp.md).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import diffusers
import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLCogVideoX,
    CogVideoXDDIMScheduler,
    CogVideoXTransformer3DModel,
    DDIMScheduler,
    EulerDiscreteScheduler,
    UNet2DConditionModel,
    UNet3DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from modules.io_utils import atomic_directory
from modules.models.tokenizer import build_t5_word_tokenizer, build_word_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_SD_VERSION = "tiny-sd-v2"  # v2: model_index.json names the pipeline (weights as v1)
TINY_SDXL_VERSION = "tiny-sdxl-v1"
TINY_UNET3D_VERSION = "tiny-unet3d-v1"
TINY_COGVIDEOX_VERSION = "tiny-cogvideox-v1"


def cache_dir() -> Path:
    return Path(os.environ.get("VIDTUNE_CACHE", Path.home() / ".cache" / "vidtune"))


def sd_scheduler() -> DDIMScheduler:
    """Stable Diffusion 1.x's noise schedule with DDIM sampling."""
    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000,
    )


def sdxl_scheduler() -> EulerDiscreteScheduler:
    """SDXL base 1.0's scheduler config (epsilon, scaled_linear, leading spacing, steps_offset 1)."""
    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        prediction_type="epsilon", steps_offset=1, timestep_spacing="leading", interpolation_type="linear",
        use_karras_sigmas=False,
    )


def cogvideox_scheduler() -> CogVideoXDDIMScheduler:
    """CogVideoX-5B's scheduler config: v-prediction, trailing, zero terminal SNR, snr_shift_scale 1.0."""
    return CogVideoXDDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        clip_sample=False, set_alpha_to_one=True, steps_offset=0, prediction_type="v_prediction",
        timestep_spacing="trailing", rescale_betas_zero_snr=True, snr_shift_scale=1.0,
    )


def tiny_text_encoder(vocab_size: int, hidden: int = 32, max_len: int = 16, seed: int = 0,
                      projection_dim: int | None = None) -> CLIPTextModel:
    """A 2-layer CLIP text encoder; with `projection_dim`, a `CLIPTextModelWithProjection` (SDXL's
    second encoder, whose pooled projection is the `text_embeds` condition)."""
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=max_len, pad_token_id=0, bos_token_id=2, eos_token_id=3,
        **({"projection_dim": projection_dim} if projection_dim else {}),
    )
    return CLIPTextModelWithProjection(cfg) if projection_dim else CLIPTextModel(cfg)


def tiny_vae() -> AutoencoderKL:
    """A per-frame KL VAE: ×2 downsampling, 4 latent channels."""
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8, sample_size=32,
    )


def model_index(pipeline: str, name: str, parts: dict[str, tuple[str | None, str | None]], **extra) -> dict:
    """A diffusers `model_index.json`: the pipeline class and the (library, class) of each part."""
    return {"_class_name": pipeline, "_diffusers_version": diffusers.__version__, "_name_or_path": name,
            **{k: list(v) for k, v in parts.items()}, **extra}


def save_once(path: Path, build: Callable[[Path], dict]) -> Path:
    """Build into a temporary sibling folder and rename it into place (atomic; a concurrent
    builder's copy wins). `build(tmp)` saves the parts and returns the model index."""
    if (path / "model_index.json").exists():
        return path
    with atomic_directory(path, keep_existing=True) as tmp:
        index = build(tmp)
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    if not (path / "model_index.json").exists():
        raise FileExistsError(f"{path} exists but holds no model_index.json (an interrupted copy?): "
                              "delete that folder and the preset is rebuilt")
    return path


TOKENIZER = ("transformers", "PreTrainedTokenizerFast")


def build_tiny_sd(path: str | Path | None = None, seed: int = 0) -> Path:
    """A latent SD-shaped model (VAE ×2 downsampling, 4 latent channels, cross-attention at two
    resolutions). Built once per cache folder; deterministic for a seed."""
    path = Path(path) if path else cache_dir() / TINY_SD_VERSION

    def build(tmp: Path) -> dict:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
        )
        vae = tiny_vae()
        tokenizer = build_word_tokenizer()
        text_encoder = tiny_text_encoder(len(tokenizer), seed=seed)
        unet.save_pretrained(tmp / "unet")
        vae.save_pretrained(tmp / "vae")
        text_encoder.save_pretrained(tmp / "text_encoder")
        tokenizer.save_pretrained(tmp / "tokenizer")
        sd_scheduler().save_pretrained(tmp / "scheduler")
        return model_index("StableDiffusionPipeline", "tiny-sd", {
            "unet": ("diffusers", "UNet2DConditionModel"), "vae": ("diffusers", "AutoencoderKL"),
            "text_encoder": ("transformers", "CLIPTextModel"), "tokenizer": TOKENIZER,
            "scheduler": ("diffusers", "DDIMScheduler"), "safety_checker": (None, None),
            "feature_extractor": (None, None), "image_encoder": (None, None),
        }, requires_safety_checker=False)

    return save_once(path, build)


def build_tiny_sdxl(path: str | Path | None = None, seed: int = 0) -> Path:
    """An SDXL-shaped model: two CLIP encoders (hidden 32 + 32 = cross-attention 64; the second
    with a 32-d projection), `text_time` added conditions (6 time ids × 8 + 32), no attention at
    the top resolution (as SDXL), linear projections, EulerDiscreteScheduler as SDXL base ships."""
    path = Path(path) if path else cache_dir() / TINY_SDXL_VERSION

    def build(tmp: Path) -> dict:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4), use_linear_projection=True, transformer_layers_per_block=(1, 1),
            addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32,
            cross_attention_dim=64, norm_num_groups=8,
        )
        vae = tiny_vae()
        tokenizer = build_word_tokenizer()
        text_encoder = tiny_text_encoder(len(tokenizer), seed=seed)
        text_encoder_2 = tiny_text_encoder(len(tokenizer), seed=seed + 1, projection_dim=32)
        unet.save_pretrained(tmp / "unet")
        vae.save_pretrained(tmp / "vae")
        text_encoder.save_pretrained(tmp / "text_encoder")
        text_encoder_2.save_pretrained(tmp / "text_encoder_2")
        tokenizer.save_pretrained(tmp / "tokenizer")
        tokenizer.save_pretrained(tmp / "tokenizer_2")
        sdxl_scheduler().save_pretrained(tmp / "scheduler")
        return model_index("StableDiffusionXLPipeline", "tiny-sdxl", {
            "unet": ("diffusers", "UNet2DConditionModel"), "vae": ("diffusers", "AutoencoderKL"),
            "text_encoder": ("transformers", "CLIPTextModel"),
            "text_encoder_2": ("transformers", "CLIPTextModelWithProjection"),
            "tokenizer": TOKENIZER, "tokenizer_2": TOKENIZER, "scheduler": ("diffusers", "EulerDiscreteScheduler"),
            "image_encoder": (None, None), "feature_extractor": (None, None),
        }, force_zeros_for_empty_prompt=True)

    return save_once(path, build)


def build_tiny_unet3d(path: str | Path | None = None, seed: int = 0) -> Path:
    """A Zeroscope/ModelScope-shaped text-to-video UNet3D (temporal convolutions and attention in
    every block, a temporal transformer at the input), one CLIP, the per-frame tiny VAE."""
    path = Path(path) if path else cache_dir() / TINY_UNET3D_VERSION

    def build(tmp: Path) -> dict:
        torch.manual_seed(seed)
        unet = UNet3DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
            cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
        )
        vae = tiny_vae()
        tokenizer = build_word_tokenizer()
        text_encoder = tiny_text_encoder(len(tokenizer), seed=seed)
        unet.save_pretrained(tmp / "unet")
        vae.save_pretrained(tmp / "vae")
        text_encoder.save_pretrained(tmp / "text_encoder")
        tokenizer.save_pretrained(tmp / "tokenizer")
        sd_scheduler().save_pretrained(tmp / "scheduler")
        return model_index("TextToVideoSDPipeline", "tiny-unet3d", {
            "unet": ("diffusers", "UNet3DConditionModel"), "vae": ("diffusers", "AutoencoderKL"),
            "text_encoder": ("transformers", "CLIPTextModel"), "tokenizer": TOKENIZER,
            "scheduler": ("diffusers", "DDIMScheduler"),
        })

    return save_once(path, build)


def build_tiny_cogvideox(path: str | Path | None = None, seed: int = 0) -> Path:
    """A CogVideoX-shaped model: a 4-block `CogVideoXTransformer3DModel` (2 heads × 16 dims — the
    3-D rotary embeddings need a head dim that is a multiple of 16 —, patch 2, text length 16),
    a causal 3-D VAE (×4 in space, ×4 in time: F frames -> (F-1)/4+1), a 2-layer T5 encoder with a
    word-level T5-style tokenizer, and CogVideoX-5B's scheduler config."""
    path = Path(path) if path else cache_dir() / TINY_COGVIDEOX_VERSION

    def build(tmp: Path) -> dict:
        torch.manual_seed(seed)
        tokenizer = build_t5_word_tokenizer(max_length=16)
        text_encoder = T5EncoderModel(T5Config(
            vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
            feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        ))
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=32,
            text_embed_dim=32, num_layers=4, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
            temporal_compression_ratio=4, max_text_seq_length=16, use_rotary_positional_embeddings=True,
        )
        vae = AutoencoderKLCogVideoX(
            in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 3,
            up_block_types=("CogVideoXUpBlock3D",) * 3, block_out_channels=(8, 16, 16), latent_channels=4,
            layers_per_block=1, norm_num_groups=4, temporal_compression_ratio=4, sample_height=32, sample_width=32,
            scaling_factor=0.7,
        )
        transformer.save_pretrained(tmp / "transformer")
        vae.save_pretrained(tmp / "vae")
        text_encoder.save_pretrained(tmp / "text_encoder")
        tokenizer.save_pretrained(tmp / "tokenizer")
        cogvideox_scheduler().save_pretrained(tmp / "scheduler")
        return model_index("CogVideoXPipeline", "tiny-cogvideox", {
            "transformer": ("diffusers", "CogVideoXTransformer3DModel"), "vae": ("diffusers", "AutoencoderKLCogVideoX"),
            "text_encoder": ("transformers", "T5EncoderModel"), "tokenizer": TOKENIZER,
            "scheduler": ("diffusers", "CogVideoXDDIMScheduler"),
        })

    return save_once(path, build)


def world_path() -> Path:
    """The tiny trained pixel-space world committed with the repo (see configs/world/tiny.yaml)."""
    path = REPO_ROOT / "assets" / "world"
    if not (path / "unet").is_dir():
        raise FileNotFoundError(
            f"The tiny world weights are missing at {path}; train them with "
            "`python -m train fit -c configs/world/tiny.yaml`."
        )
    return path


def video_world_path() -> Path:
    """The tiny trained pixel-space text-to-video world (UNet3D) committed with the repo
    (see configs/video_world/tiny.yaml and docs/video_world.md)."""
    path = REPO_ROOT / "assets" / "video_world"
    if not (path / "unet").is_dir():
        raise FileNotFoundError(
            f"The tiny video world weights are missing at {path}; train them with "
            "`python -m train fit -c configs/video_world/tiny.yaml`."
        )
    return path


CONDITIONAL_WORLDS = {  # preset -> (folder under assets/, recipe)
    "tiny-world-inpaint": ("world_inpaint", "configs/gp/inpaint_world.yaml"),
    "tiny-world-sr": ("world_sr", "configs/gp/sr_world.yaml"),
}


def conditional_world_path(name: str) -> Path:
    """A tiny world fine-tuned with GP noise for a restoration task, committed with the repo (a whole
    pipeline folder with `export.json`; `modules.gp_finetune.load_finetuned(name)` gives spec and card)."""
    folder, recipe = CONDITIONAL_WORLDS[name]
    path = REPO_ROOT / "assets" / folder
    if not (path / "unet").is_dir():
        raise FileNotFoundError(
            f"The {name} weights are missing at {path}; train them with `python -m train fit -c {recipe}` and "
            f"package the export with `python scripts/gp_world_results.py package <run>/export {path}`."
        )
    return path


def world_inpaint_path() -> Path:
    return conditional_world_path("tiny-world-inpaint")


def world_sr_path() -> Path:
    return conditional_world_path("tiny-world-sr")
