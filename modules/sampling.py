"""The one DDIM inversion + sampling loop over video latents, with named hook points.

Everything that steers inference is a `SamplingCallback`; the loop calls, in order:

- `on_phase_start(state)` / `on_phase_end(state)` around each phase (`invert`, `sample`):
  install/remove attention processors (STEM during inversion, feature injection during sampling);
- `initial_noise(state, z)` once before sampling: replace/transform z_T (Warped noise);
- `before_step(state)` before each network call (e.g. run a source pass to record features);
- `adjust_eps(state, eps)` after classifier-free guidance: add a per-step guidance term (FADE);
- `after_step(state, z_next)` after each DDIM update: modify the next latent (Warped
  self-guidance, mask blending) or record it.

The denoiser is any callable `(z, t, text_embeddings) -> model output` on `(B, C, F, H, W)`;
model outputs are converted to ε by the scheduler's `prediction_type` (epsilon | v_prediction).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class SamplingCallback:
    """Base class: override any hook; all default to no-ops."""

    def on_phase_start(self, state: "LoopState") -> None: ...

    def on_phase_end(self, state: "LoopState") -> None: ...

    def initial_noise(self, state: "LoopState", z: torch.Tensor) -> torch.Tensor:
        return z

    def before_step(self, state: "LoopState") -> None: ...

    def adjust_eps(self, state: "LoopState", eps: torch.Tensor) -> torch.Tensor:
        return eps

    def after_step(self, state: "LoopState", z_next: torch.Tensor) -> torch.Tensor:
        return z_next


@dataclass
class LoopState:
    phase: str  # "invert" | "sample"
    timesteps: list[int]  # in the order this phase visits them
    step: int = 0
    t: int = 0
    z: torch.Tensor | None = None
    cond: torch.Tensor | None = None
    trajectory: list[torch.Tensor] = field(default_factory=list)  # inversion: z_0, z_t1, ..., z_T
    extras: dict = field(default_factory=dict)
    denoiser: object = None  # the model being run (callbacks install processors on it)


class DDIMLoop:
    """Deterministic DDIM (η = 0) inversion and sampling on the scheduler's ᾱ table."""

    def __init__(self, denoiser: Denoiser, scheduler, num_steps: int = 50,
                 callbacks: Sequence[SamplingCallback] = (), progress: bool = True):
        self.denoiser = denoiser
        self.alphas = scheduler.alphas_cumprod.double()
        self.prediction_type = scheduler.config.prediction_type
        n_train = scheduler.config.num_train_timesteps
        offset = scheduler.config.get("steps_offset", 0)
        stride = n_train // num_steps
        self.timesteps = [i * stride + offset for i in range(num_steps)]  # ascending
        self.final_alpha = 1.0 if scheduler.config.get("set_alpha_to_one", True) else float(self.alphas[0])
        self.callbacks = list(callbacks)
        self.progress = progress

    # -- arithmetic ----------------------------------------------------------------------------
    def alpha(self, t: int | None) -> float:
        return self.final_alpha if t is None else float(self.alphas[t])

    def to_eps(self, out: torch.Tensor, z: torch.Tensor, t: int) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return out
        a = self.alpha(t)
        if self.prediction_type == "v_prediction":
            return a**0.5 * out + (1 - a) ** 0.5 * z
        raise ValueError(f"unsupported prediction_type {self.prediction_type!r} (epsilon or v_prediction)")

    @staticmethod
    def ddim_move(z: torch.Tensor, eps: torch.Tensor, a_from: float, a_to: float) -> torch.Tensor:
        """Move z from noise level ᾱ=a_from to a_to along the deterministic DDIM path."""
        x0 = (z - (1 - a_from) ** 0.5 * eps) / a_from**0.5
        return a_to**0.5 * x0 + (1 - a_to) ** 0.5 * eps

    def predict_eps(self, state: LoopState, z, t, cond, uncond=None, guidance_scale=1.0):
        for cb in self.callbacks:
            cb.before_step(state)
        tt = torch.tensor(t, device=z.device)
        if uncond is not None and guidance_scale != 1.0:
            out = self.denoiser(torch.cat([z, z]), tt, torch.cat([uncond, cond]))
            e_u, e_c = self.to_eps(out, torch.cat([z, z]), t).chunk(2)
            eps = e_u + guidance_scale * (e_c - e_u)
            state.extras["cfg_term"] = e_c - e_u
        else:
            eps = self.to_eps(self.denoiser(z, tt, cond), z, t)
        for cb in self.callbacks:
            eps = cb.adjust_eps(state, eps)
        return eps

    def _bar(self, n, desc):
        return tqdm(total=n, desc=desc, disable=not self.progress, leave=False)

    # -- phases --------------------------------------------------------------------------------
    def invert(self, z0: torch.Tensor, cond: torch.Tensor, uncond=None, guidance_scale: float = 1.0) -> LoopState:
        """DDIM inversion z_0 → z_T; returns the state with every z_t kept in `trajectory`."""
        state = LoopState("invert", list(self.timesteps), z=z0, cond=cond, trajectory=[z0], denoiser=self.denoiser)
        for cb in self.callbacks:
            cb.on_phase_start(state)
        z = z0
        a_prev = self.final_alpha
        with self._bar(len(self.timesteps), "invert") as bar:
            for i, t in enumerate(self.timesteps):
                state.step, state.t, state.z = i, t, z
                eps = self.predict_eps(state, z, t, cond, uncond, guidance_scale)
                z = self.ddim_move(z.double(), eps.double(), a_prev, self.alpha(t)).to(z0.dtype)
                for cb in self.callbacks:
                    z = cb.after_step(state, z)
                state.trajectory.append(z)
                a_prev = self.alpha(t)
                bar.update()
        state.z = z
        for cb in self.callbacks:
            cb.on_phase_end(state)
        return state

    def sample(self, zT: torch.Tensor, cond: torch.Tensor, uncond=None, guidance_scale: float = 7.5,
               source: LoopState | None = None, label: str = "edit") -> torch.Tensor:
        """DDIM sampling z_T → z_0 (CFG when `uncond` is given and scale ≠ 1). `source` (the
        inversion state) and `label` ("reconstruct" | "edit") are visible to callbacks."""
        order = list(reversed(self.timesteps))
        state = LoopState("sample", order, cond=cond, extras={"label": label}, denoiser=self.denoiser)
        if source is not None:
            state.extras["source"] = source
        for cb in self.callbacks:
            cb.on_phase_start(state)
        z = zT
        for cb in self.callbacks:
            z = cb.initial_noise(state, z)
        with self._bar(len(order), "sample") as bar:
            for i, t in enumerate(order):
                state.step, state.t, state.z = i, t, z
                eps = self.predict_eps(state, z, t, cond, uncond, guidance_scale)
                a_next = self.alpha(order[i + 1]) if i + 1 < len(order) else self.final_alpha
                z = self.ddim_move(z.double(), eps.double(), self.alpha(t), a_next).to(zT.dtype)
                for cb in self.callbacks:
                    z = cb.after_step(state, z)
                bar.update()
        state.z = z
        for cb in self.callbacks:
            cb.on_phase_end(state)
        return z


class LatentCodec:
    """VAE encode/decode for `(B, 3, F, H, W)` pixels in [-1, 1]; the identity for pixel-space models."""

    def __init__(self, vae=None, frame_chunk: int = 8):
        self.vae = vae
        self.frame_chunk = frame_chunk
        self.scale = vae.config.scaling_factor if vae is not None else 1.0

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return pixels
        b, c, f, h, w = pixels.shape
        x = pixels.transpose(1, 2).reshape(b * f, c, h, w).to(self.vae.dtype)
        z = torch.cat([self.vae.encode(x[i:i + self.frame_chunk]).latent_dist.mean
                       for i in range(0, b * f, self.frame_chunk)])
        z = z * self.scale
        return z.reshape(b, f, *z.shape[1:]).transpose(1, 2)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return latents.clamp(-1, 1)
        b, c, f, h, w = latents.shape
        z = latents.transpose(1, 2).reshape(b * f, c, h, w).to(self.vae.dtype) / self.scale
        x = torch.cat([self.vae.decode(z[i:i + self.frame_chunk]).sample for i in range(0, b * f, self.frame_chunk)])
        return x.reshape(b, f, *x.shape[1:]).transpose(1, 2).clamp(-1, 1)
