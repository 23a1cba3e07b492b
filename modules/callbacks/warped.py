"""Warped sampling as an inference callback (METHODS.md §4): GP noise warped along the video's flow
and equivariance self-guidance, on the shared `DDIMLoop`.

Algorithm 1 of the paper samples frame 0 normally, keeping the network's x̂0 at every step, then each
frame j ≥ 1 with its warped noise and, per step t, after the Euler step of the probability-flow ODE
(the deterministic DDIM step in VE coordinates `u = z/√ᾱ`, `σ = √((1−ᾱ)/ᾱ)`):

    e_t = Σ_in-frame |warp(x̂0^(j)_t) − x̂0^(j−1)_t|²,     u ← u − (λ / √e_t) ∇_u e_t,

`warp` = bilinear interpolation of frame j's prediction onto frame j−1's grid (sampled at
`p + fwd_{j−1}(p)`; network inputs are never interpolated), in-frame = those points inside the frame,
the gradient through the network. In latent coordinates: `∇_u e = √ᾱ_t ∇_z e` and the new latent is
`z' = √ᾱ' u'`, so the update is `Δz' = −√(ᾱ_t ᾱ') (λ/√e) ∇_z e` (METHODS.md writes `−ᾱ_t (λ/√e) ∇_z e`,
the same update read at the current level; the two differ by `√(ᾱ'/ᾱ_t)`, → 1 as steps shrink).
It is computed as one backward pass of `Σ 2λ√e` (whose gradient is `(λ/√e)∇e` per frame and batch
item), delivered to the loop as `GuidanceTerm(z=...)`; the loop reuses the guided pass's prediction
for its step. λ = 0 is GP noise warping alone (no gradient, no graph).

**Lockstep.** Frame j needs only frame j−1's x̂0 at the same step, so for an image model (frames
independent in the batch) all frames can step together: within a batch the target of frame j is
frame j−1's prediction of the same pass (detached). Frames run in chunks of `frame_chunk` (memory of
the graph ∝ chunk); the first frame of a later chunk takes its target from the x̂0 trajectory the
previous chunk kept of its last frame. `frame_chunk = 1` is the sequential algorithm; any chunk gives
the same video (`tests/test_warped.py`). Without guidance all frames run as one batch.

Use `modules.warped.warped_restore(...)` (it estimates the flow, warps the noise, runs the chunks
through `modules.gp_finetune.restore`), `python -m train predict -c configs/warped/inpaint_world.yaml`,
or `scripts/edit.py --task inpainting|super_resolution`.
"""
from __future__ import annotations

from typing import Literal

import lightning as L
import torch

from modules.flow import VideoFlow, bilinear_sample, pixel_grid
from modules.noise.warping import NOISE_MODES, BaseNoise, NoiseMode, warped_noise
from modules.sampling import GuidanceTerm, LoopState, Prediction, SamplingCallback

FlowMethod = Literal["dis", "farneback", "raft"]


class WarpedSamplingError(ValueError):
    pass


class WarpedSampling(L.Callback, SamplingCallback):
    def __init__(self, noise: NoiseMode = "gp", base_noise: BaseNoise = "gp", guidance: float = 1.0,
                 frame_chunk: int | None = 4, flow: FlowMethod = "dis", raft_weights: str | None = None,
                 gp: dict | None = None, seed: int = 0, start: float = 0.0, stop: float = 1.0):
        """
        Args:
            noise: noise warping mode: `gp` (the RFF function at back-warped points; the paper's), or the
                baselines `fixed`, `resample`, `nearest`, `bilinear`.
            base_noise: what `fixed`/`resample`/`nearest`/`bilinear` warp: `gp` (for GP-fine-tuned models) or `white`.
            guidance: λ of the equivariance self-guidance (paper 1; 0 = noise warping alone).
            frame_chunk: frames sampled together in lockstep with guidance (memory of the autograd graph ∝
                chunk); None = all frames. The result does not depend on it.
            flow: optical flow between consecutive conditioning frames: `dis` (OpenCV, default), `farneback`,
                `raft` (torchvision RAFT-large; needs `raft_weights`).
            raft_weights: local file with torchvision's raft_large state dict (only for `flow: raft`).
            gp: GP noise parameters {features, lengthscale, truncation} (default: the model card's / J = 3000,
                ℓ = 2/(π·R)).
            seed: seeds the noise.
            start, stop: fractions of the schedule where the guidance is applied (default: every step).
        """
        if noise not in NOISE_MODES:
            raise WarpedSamplingError(f"WarpedSampling: noise must be one of {NOISE_MODES}, got {noise!r}")
        if not (guidance >= 0 and guidance == guidance):
            raise WarpedSamplingError(f"WarpedSampling: guidance (λ) must be >= 0, got {guidance}")
        if frame_chunk is not None and int(frame_chunk) < 1:
            raise WarpedSamplingError(f"WarpedSampling: frame_chunk must be >= 1 or null (all frames), got {frame_chunk}")
        if noise == "gp" and base_noise != "gp":
            raise WarpedSamplingError("WarpedSampling: noise 'gp' warps a GP function (base_noise: gp)")
        self.noise, self.base_noise, self.guidance_scale = noise, base_noise, float(guidance)
        self.frame_chunk = None if frame_chunk is None else int(frame_chunk)
        self.flow_method, self.raft_weights = flow, raft_weights
        self.gp, self.seed, self.start, self.stop = gp, int(seed), float(start), float(stop)
        self._flow: VideoFlow | None = None
        self._span = (0, 0)
        self._trail: dict[int, torch.Tensor] | None = None  # x̂0 of the previous chunk's last frame, per step
        self._record: dict[int, torch.Tensor] = {}
        self.latents: list[torch.Tensor] = []  # the final latent of every chunk
        self.errors: list[torch.Tensor] = []  # e_t per guided step: (B, frames of the chunk)

    @property
    def needs_grad(self) -> bool:
        return self.guidance_scale > 0

    # Lightning: register with the module's sampling loop
    def setup(self, trainer, pl_module, stage):
        cbs = getattr(pl_module, "sampling_callbacks", None)
        if cbs is not None and self not in cbs:
            cbs.append(self)

    # -- per video / per chunk (called by modules.warped.warped_restore) ---------------------------------
    def begin_video(self, latent_flow: VideoFlow) -> None:
        """Start a video whose flow on the latent grid is `latent_flow`."""
        self._flow, self._trail, self._record, self.errors, self.latents = latent_flow, None, {}, [], []
        self._span = (0, 0)

    def noise_for(self, shape: tuple) -> torch.Tensor:
        """Warped initial noise `(B, C, F, h, w)` of the whole video (this callback's mode and seed)."""
        if self._flow is None:
            raise WarpedSamplingError("WarpedSampling.noise_for: call begin_video(latent_flow) first")
        to_first = self._flow.to_first() if self.noise in ("nearest", "bilinear", "gp") else None
        return warped_noise(self.noise, shape, to_first, seed=self.seed, base=self.base_noise, gp=self.gp)

    def chunks(self, num_frames: int) -> list[tuple[int, int]]:
        size = num_frames if (self.frame_chunk is None or not self.needs_grad) else self.frame_chunk
        return [(s, min(s + size, num_frames)) for s in range(0, num_frames, size)]

    def begin_chunk(self, start: int, stop: int) -> None:
        """The next loop run samples frames [start, stop) of the video (chunks in order)."""
        if self._flow is None:
            raise WarpedSamplingError("WarpedSampling: call begin_video(latent_flow) before sampling")
        if start > 0 and self.needs_grad and (self._trail is None or self._span[1] != start):
            raise WarpedSamplingError(f"WarpedSampling: chunk [{start}, {stop}) needs the x̂0 trajectory of frame "
                                      f"{start - 1}: sample the chunks in order")
        self._span = (start, stop)

    # -- loop hooks ----------------------------------------------------------------------------------------
    def on_phase_start(self, state: LoopState) -> None:
        if state.phase != "sample":
            return
        if self._flow is None:
            raise WarpedSamplingError("WarpedSampling samples a video along its flow: run it through "
                                      "modules.warped.warped_restore (or call begin_video / begin_chunk)")
        self._record = {}

    def guidance(self, state: LoopState, z: torch.Tensor, pred: Prediction) -> GuidanceTerm | None:
        if state.phase != "sample":
            return None
        start, stop = self._span
        if z.shape[2] != stop - start:
            raise WarpedSamplingError(f"WarpedSampling: the loop samples {z.shape[2]} frames, the chunk is [{start}, {stop})")
        x0 = pred.x0  # (B, C, Fc, h, w), differentiable in z
        first = 1 if start == 0 else 0  # local index of the first guided frame
        if first >= x0.shape[2]:
            return None
        prev = x0[:, :, :-1].detach()
        if start > 0:
            prev = torch.cat([self._trail[state.step][:, :, None].to(x0), prev], dim=2)
        else:
            prev = prev[:, :, first - 1:]
        cur = x0[:, :, first:]  # frames start+first .. stop-1
        b, c, n, h, w = cur.shape
        fwd = self._flow.forward[start + first - 1: stop - 1].to(x0.device, x0.dtype)  # pair (g-1 -> g) on g-1's grid
        coords = (pixel_grid(h, w, x0.device, x0.dtype) + fwd).repeat(b, 1, 1, 1)  # (b·n, h, w, 2)
        warped, valid = bilinear_sample(cur.permute(0, 2, 1, 3, 4).reshape(b * n, c, h, w), coords)
        diff = (warped - prev.permute(0, 2, 1, 3, 4).reshape(b * n, c, h, w)) ** 2
        e = (diff * valid[:, None]).sum((1, 2, 3)).reshape(b, n)
        self.errors.append(e.detach())
        loss = 2 * self.guidance_scale * e.clamp_min(1e-20).sqrt().sum()
        (grad,) = torch.autograd.grad(loss, z)
        scale = (state.alpha * state.alpha_next) ** 0.5
        return GuidanceTerm(z=-scale * grad)

    def after_step(self, state: LoopState, z_next: torch.Tensor) -> torch.Tensor:
        if state.phase == "sample" and self.needs_grad:
            self._record[state.step] = state.prediction.x0[:, :, -1].detach()
        return z_next

    def on_phase_end(self, state: LoopState) -> None:
        if state.phase == "sample":
            self.latents.append(state.z.detach())
            self._trail, self._record = self._record, {}
