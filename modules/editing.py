"""Editing a clip: inversion with the source prompt, reconstruction, sampling with edit prompts.
Used by validation/predict of every LightningModule and by scripts/edit.py."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from modules.models.loading import DiffusionParts, encode_prompts
from modules.sampling import DDIMLoop, LatentCodec, SamplingCallback


@dataclass
class EditConfig:
    """How clips are edited during validation/predict.

    Args:
        edit_prompts: prompts to edit into (empty: only reconstruct).
        num_inference_steps: DDIM steps for inversion and sampling.
        guidance_scale: classifier-free guidance for the edit (released SAVE code 7.5; paper 10).
        inversion_guidance: CFG during inversion (1 = none).
        reconstruct: also sample back with the source prompt at CFG 1 (inversion quality check).
        fps: frame rate of the written videos.
    """

    edit_prompts: list[str] = field(default_factory=list)
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    inversion_guidance: float = 1.0
    reconstruct: bool = True
    fps: int = 8


@dataclass
class EditResult:
    source: torch.Tensor  # (B, 3, F, H, W) in [-1, 1]
    reconstruction: torch.Tensor | None
    edits: dict[str, torch.Tensor]
    inversion: object  # LoopState with the trajectory


@torch.no_grad()
def edit_clip(parts: DiffusionParts, video_unet, pixels: torch.Tensor, source_prompt: str, cfg: EditConfig,
              callbacks: list[SamplingCallback] = (), progress: bool = True) -> EditResult:
    device = pixels.device
    codec = LatentCodec(parts.vae)
    dtype = video_unet.dtype
    z0 = codec.encode(pixels.to(dtype))
    emb_src, emb_null = encode_prompts(parts, [source_prompt, ""]).to(device, dtype).chunk(2)
    loop = DDIMLoop(video_unet, parts.scheduler, cfg.num_inference_steps, callbacks, progress)
    inv = loop.invert(z0, emb_src, uncond=emb_null, guidance_scale=cfg.inversion_guidance)
    recon = None
    if cfg.reconstruct:
        recon = codec.decode(loop.sample(inv.z, emb_src, guidance_scale=1.0, source=inv, label="reconstruct")).float()
    edits = {}
    for prompt in cfg.edit_prompts:
        emb = encode_prompts(parts, [prompt]).to(device, dtype)
        z = loop.sample(inv.z, emb, uncond=emb_null, guidance_scale=cfg.guidance_scale, source=inv, label="edit")
        edits[prompt] = codec.decode(z).float()
    return EditResult(pixels, recon, edits, inv)
