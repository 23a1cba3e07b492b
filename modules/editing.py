"""The two entry points of inference, on any model family (`ModelSpec`):

- `edit_clip`: DDIM inversion of a clip with its source prompt, optional CFG-1 reconstruction
  (the inversion-quality check), sampling with edit prompts (zero-shot callbacks steer both);
- `generate`: sampling from noise — text-to-video, or conditional restoration when
  `concat` supplies channel-concatenated conditioning latents.

Used by validation/predict of every LightningModule and by scripts/edit.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from modules.sampling import DDIMLoop, LoopState, SamplingCallback


@dataclass
class EditConfig:
    """How clips are edited during validation/predict.

    Args:
        edit_prompts: prompts to edit into (empty: only reconstruct).
        num_inference_steps: DDIM steps for inversion and sampling.
        guidance_scale: classifier-free guidance for the edit (released SAVE code 7.5; paper 10).
        inversion_guidance: CFG during inversion (1 = none).
        inversion_prompt: prompt for the inversion (None: the clip's source prompt; FADE inverts
            with the empty prompt "").
        reconstruct: also sample back with the source prompt at CFG 1 (inversion quality check).
        fps: frame rate of the written videos (0: the source clip's).
    """

    edit_prompts: list[str] = field(default_factory=list)
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    inversion_guidance: float = 1.0
    inversion_prompt: str | None = None
    reconstruct: bool = True
    fps: int = 8


@dataclass
class EditResult:
    source: torch.Tensor  # (B, 3, F, H, W) in [-1, 1]
    reconstruction: torch.Tensor | None
    edits: dict[str, torch.Tensor]
    inversion: LoopState  # with the trajectory z_0 … z_T
    source_prompt: str = ""
    fps: float | None = None


def _check_steps(spec, steps: int) -> None:
    n = spec.scheduler.config.num_train_timesteps
    if not isinstance(steps, int) or not 1 <= steps <= n:
        raise ValueError(f"num_inference_steps must be an integer between 1 and {n} (the scheduler's "
                         f"num_train_timesteps), got {steps!r}")


def edit_clip(spec, pixels: torch.Tensor, source_prompt: str, cfg: EditConfig,
              callbacks: list[SamplingCallback] = (), progress: bool = True, denoiser=None) -> EditResult:
    """Invert `pixels` `(B, 3, F, H, W)` in [-1, 1] with `source_prompt`, then reconstruct and edit.
    `denoiser` defaults to the spec itself (its `model`, e.g. a tuned VideoUNet)."""
    _check_steps(spec, cfg.num_inference_steps)
    b, _, f, h, w = pixels.shape
    spec.check_video_size(f, h, w, where="edit_clip(pixels)")
    device = pixels.device
    z0 = spec.encode(pixels.to(spec.model_dtype))
    size = (h, w)
    inv_prompt = source_prompt if cfg.inversion_prompt is None else cfg.inversion_prompt
    src = spec.encode_prompt([source_prompt], size=size).to(device).expand_to(b)
    inv_cond = spec.encode_prompt([inv_prompt], size=size).to(device).expand_to(b)
    null = spec.encode_prompt([""], size=size).to(device).expand_to(b)
    loop = DDIMLoop(denoiser or spec, spec.scheduler, cfg.num_inference_steps, callbacks, progress)
    with torch.no_grad():
        inv = loop.invert(z0, inv_cond, uncond=null, guidance_scale=cfg.inversion_guidance)
        inv.cond = src  # the source prompt's conditioning, for callbacks that run the source branch (PnP, FADE)
        recon = None
        if cfg.reconstruct:
            recon = spec.decode(loop.sample(inv.z, src, guidance_scale=1.0, source=inv, label="reconstruct")).float()
        edits = {}
        for prompt in cfg.edit_prompts:
            cond = spec.encode_prompt([prompt], size=size).to(device).expand_to(b)
            z = loop.sample(inv.z, cond, uncond=null, guidance_scale=cfg.guidance_scale, source=inv, label="edit")
            edits[prompt] = spec.decode(z).float()
    return EditResult(pixels, recon, edits, inv, source_prompt)


def generate(spec, prompts: list[str], num_frames: int, height: int, width: int, num_inference_steps: int = 50,
             guidance_scale: float = 7.5, seed: int = 0, callbacks: list[SamplingCallback] = (),
             concat: torch.Tensor | None = None, noise: torch.Tensor | None = None, progress: bool = True,
             denoiser=None) -> torch.Tensor:
    """Sample `(len(prompts), 3, F, H, W)` videos in [-1, 1] from noise. `concat`: conditioning
    latents `(B, Cc, F', h, w)` appended to the noisy latent (super-resolution, inpainting);
    `noise`: z_T (default: seeded white noise of the latent shape)."""
    _check_steps(spec, num_inference_steps)
    c, fl, hl, wl = spec.latent_shape(num_frames, height, width)
    b = len(prompts)
    device = next(spec.network.parameters()).device
    if noise is None:
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn((b, c, fl, hl, wl), generator=g)
    zT = noise.to(device, spec.model_dtype)
    size = (height, width)
    cond = spec.encode_prompt(list(prompts), size=size).to(device)
    null = spec.encode_prompt([""], size=size).to(device).expand_to(b)
    if concat is not None:
        cond, null = cond.with_(concat_latents=concat), null.with_(concat_latents=concat)
    loop = DDIMLoop(denoiser or spec, spec.scheduler, num_inference_steps, callbacks, progress)
    with torch.no_grad():
        z = loop.sample(zT, cond, uncond=null, guidance_scale=guidance_scale, label="generate")
        return spec.decode(z).float()
