"""FADE spectrum-guided editing as an inference callback on the shared loop (METHODS.md §6).

Use it in a recipe (`trainer.callbacks: - class_path: modules.callbacks.fade.FADEGuidance`), in
`scripts/edit.py --inversion fade`, or directly: `edit_clip(spec, px, src, EditConfig(
inversion_prompt="", guidance_scale=6, ...), callbacks=[FADEGuidance()])`.

At each edit step in the window (`start <= step/steps < stop`, default the first 60%), after the
CFG pass, in `adjust_output`:
1. reference pass: the inverted latent z*_t with the source prompt, no gradient, stopped after the
   last sketching block (`SketchFeatures.run(stop=True)`);
2. gradient pass: the current z_t with the source prompt, with a graph, stopped there too;
3. G_t = Σ_blocks mean((LP(A) − LP(A*))²), g = scale · ∇_{z_t} G_t, rescaled per sample so that
   ‖g‖/‖c‖ ∈ [clamp] with c the CFG term (conditional − unconditional model output);
4. g is added to the model output (v for CogVideoX; adding +g moves the DDIM step along −∇G for
   ε- and v-prediction alike).
The callback is not `needs_grad`: the loop's own gradient hook would build a graph through the
whole CFG pass (42 blocks, batch 2); FADE needs one only through the sketching blocks of one
source-prompt pass. Outside the window nothing extra runs.

Mask blending (local edits): `mask` (a pixel mask `(F, H, W)` of the clip, 1 = editable; a path to
a `.npy`/`.pt` file or a tensor) is max-pooled to the latent grid (×4 in time with the causal first
frame alone, ×8 in space for CogVideoX: the spec's VAE factors) and applied after each step while
`step/steps < mask_stop` (first 35 of 50): z_{t−1} ← z*_{t−1} + M ⊙ (z_{t−1} − z*_{t−1}).

`records` holds, per guided step of the last edit: step, t, energy G_t, ‖∇G‖, ‖c‖ and the applied
‖g‖; with `scale=0` the callback only measures G_t (the no-guidance baseline of the same edit).
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from modules.fade import FADEConfigError, FFTMode, SketchFeatures, check_fft, check_keep, energy, sketch_blocks
from modules.sampling import LoopState, SamplingCallback


class FADEGuidance(L.Callback, SamplingCallback):
    def __init__(self, n_sketch: int = 4, fft: FFTMode = "3d", keep: float = 2 / 3, scale: float = 5000.0,
                 clamp: tuple[float, float] = (0.33, 3.0), start: float = 0.0, stop: float = 0.6,
                 mask: str | None = None, mask_stop: float = 0.7):
        """
        Args:
            n_sketch: sketching blocks = the first n_sketch transformer blocks (FADE: 4 of 42).
            fft: "3d" FFT over (frames, height, width) of the token grid (paper, default) or "2d"
                per frame over (height, width) (released code).
            keep: fraction of each frequency axis the centred low-pass box keeps, in (0, 1] (2/3).
            scale: s in g = s·∇G (released code 5000), before the norm clamp.
            clamp: (low, high) bounds of ‖g‖/‖CFG term‖ per sample ([0.33, 3]); without CFG no clamp.
            start, stop: guidance window as fractions of the sampling steps (first 60%).
            mask: optional pixel mask (F, H, W) of the clip, 1 = editable (.npy or .pt path, or a
                tensor); None: no blending.
            mask_stop: blend while step/steps < mask_stop (35 of 50 steps = 0.7).
        """
        check_keep(keep)
        check_fft(fft)
        if not (isinstance(n_sketch, int) and n_sketch >= 1):
            raise FADEConfigError(f"FADEGuidance: n_sketch must be an integer >= 1, got {n_sketch!r}")
        lo, hi = (float(c) for c in clamp)
        if not 0 < lo <= hi:
            raise FADEConfigError(f"FADEGuidance: clamp must be (low, high) with 0 < low <= high, got {clamp!r}")
        if not 0 <= start < stop <= 1:
            raise FADEConfigError(f"FADEGuidance: need 0 <= start < stop <= 1, got start={start}, stop={stop}")
        if scale < 0:
            raise FADEConfigError(f"FADEGuidance: scale must be >= 0 (0 measures G_t only), got {scale}")
        self.n_sketch, self.fft, self.keep, self.scale, self.clamp = n_sketch, fft, keep, float(scale), (lo, hi)
        self.start, self.stop, self.mask_stop = start, stop, mask_stop
        self.mask = self._read_mask(mask)
        self.records: list[dict] = []
        self.history: list[list[dict]] = []  # the records of every edit phase, in order
        self.latents: list[torch.Tensor] = []  # the final latent z_0 of every edit phase, in order
        self._feats: SketchFeatures | None = None
        self._mask_latent: torch.Tensor | None = None

    @staticmethod
    def _read_mask(mask):
        if mask is None or isinstance(mask, torch.Tensor):
            return None if mask is None else mask.float()
        path = Path(mask)
        if not path.is_file():
            raise FileNotFoundError(f"FADEGuidance: mask file {path} not found (an (F, H, W) array, 1 = editable, "
                                    "as .npy or .pt)")
        if path.suffix == ".npy":
            import numpy as np

            return torch.from_numpy(np.load(path)).float()
        return torch.load(path, weights_only=True).float()

    # Lightning: register with the module's sampling loop; refuse a bad n_sketch before any work
    def setup(self, trainer, pl_module, stage):
        sketch_blocks(pl_module.spec.network, self.n_sketch)
        if trainer.predict_loop.inference_mode:
            raise FADEConfigError(
                "FADEGuidance needs gradients during predict, but the Trainer runs it under torch.inference_mode; "
                "set `trainer.inference_mode: false` in the recipe (or --trainer.inference_mode false).")
        if self not in pl_module.sampling_callbacks:
            pl_module.sampling_callbacks.append(self)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.is_global_zero or not self.records:
            return
        import json

        tag = "predict" if batch_idx == 0 else f"predict{batch_idx:03d}"
        path = Path(trainer.default_root_dir) / "videos" / f"{tag}_fade.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"mean_energy": self.mean_energy(), "steps": self.records}, indent=2))
        print(f"[fade] {tag}: mean G_t over {len(self.records)} guided steps {self.mean_energy():.4g} -> {path}")

    # -- checks before the inversion ------------------------------------------------------------
    def check(self, spec, latent_shape) -> None:
        """Refuse a model with too few blocks or a mask of the wrong size for latents of `latent_shape`."""
        sketch_blocks(spec.network, self.n_sketch)
        if self.mask is not None:
            self._mask_latent = self.pool_mask(spec, self.mask, latent_shape)

    @staticmethod
    def pool_mask(spec, mask: torch.Tensor, latent_shape) -> torch.Tensor:
        """Pixel mask (F, H, W) -> latent mask (1, 1, F', h, w): max over each latent cell's pixels
        (time: frame 0 alone, then groups of the VAE's temporal factor; space: the VAE factor)."""
        fl, hl, wl = tuple(latent_shape)[-3:]
        tc, s = spec.temporal_compression, spec.vae_scale_factor
        frames, height, width = (fl - 1) * tc + 1, hl * s, wl * s
        if mask.ndim == 4 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if tuple(mask.shape) != (frames, height, width):
            raise FADEConfigError(
                f"FADEGuidance: mask has shape {tuple(mask.shape)} but the clip is {frames} frames of {height}×{width}; "
                f"give an (F, H, W) = ({frames}, {height}, {width}) mask (1 = editable), e.g. one per frame of the "
                "clip after resizing.")
        m = mask.float().clamp(0, 1)
        first = m[:1]
        rest = m[1:].reshape(fl - 1, tc, height, width).amax(dim=1) if fl > 1 else m[:0]
        m = torch.cat([first, rest])[None]  # (1, F', H, W)
        return F.max_pool2d(m, s)[None]  # (1, 1, F', h, w)

    # -- sampling-loop hooks ----------------------------------------------------------------------
    def _editing(self, state: LoopState) -> bool:
        return state.phase == "sample" and state.extras.get("label") == "edit"

    def _frac(self, state: LoopState) -> float:
        return state.step / max(1, len(state.timesteps))

    def active(self, state: LoopState) -> bool:
        frac = self._frac(state)
        return self.start <= frac < self.stop or (self.mask is not None and frac < self.mask_stop)

    def on_phase_start(self, state: LoopState) -> None:
        if state.phase == "invert":  # before any step: refuse what cannot work
            self.check(state.denoiser, state.trajectory[0].shape)
            return
        if not self._editing(state):
            return
        if "source" not in state.extras:
            raise FADEConfigError("FADEGuidance: the edit has no inversion trajectory (state.extras['source']); "
                                  "run it through edit_clip (DDIM inversion first)")
        self.check(state.denoiser, state.extras["source"].trajectory[0].shape)
        self.records = []
        self.history.append(self.records)
        self._feats = SketchFeatures(state.model, self.n_sketch)

    def on_phase_end(self, state: LoopState) -> None:
        if self._editing(state):
            self.latents.append(state.z.detach())
        if self._feats is not None:
            self._feats.remove()
            self._feats = None

    def _source_index(self, state: LoopState) -> int:
        return list(state.extras["source"].timesteps).index(state.t) + 1  # trajectory[i]: the level of t

    def adjust_output(self, state: LoopState, output: torch.Tensor) -> torch.Tensor:
        if self._feats is None or not (self.start <= self._frac(state) < self.stop):
            return output
        source = state.extras["source"]
        z_ref = source.trajectory[self._source_index(state)]
        cond, den, grid = source.cond, state.denoiser, state.denoiser.token_grid(state.z.shape)
        with torch.no_grad():
            ref = self._feats.run(den, z_ref, state.t, cond, stop=True)
        if self.scale > 0 and torch.is_inference_mode_enabled():
            raise FADEConfigError("FADEGuidance needs gradients but the edit runs under torch.inference_mode; use "
                                  "torch.no_grad (Lightning: trainer.inference_mode false)")
        z = state.z.detach().requires_grad_(self.scale > 0)
        with torch.enable_grad() if self.scale > 0 else torch.no_grad():
            feats = self._feats.run(den, z, state.t, cond, stop=True)
            g_t = energy(feats, ref, grid, self.keep, self.fft)
        rec = {"step": state.step, "t": state.t, "energy": float(g_t)}
        self.records.append(rec)
        if self.scale == 0:
            return output
        (grad,) = torch.autograd.grad(g_t, z)
        g = self.scale * grad.to(output.dtype)
        dims = tuple(range(1, g.ndim))
        gn = g.flatten(1).norm(dim=1)
        rec["grad_norm"] = float(grad.norm())
        if state.cfg_term is not None:
            cn = state.cfg_term.detach().flatten(1).norm(dim=1)
            ratio = gn / cn.clamp_min(1e-12)
            target = ratio.clamp(*self.clamp)
            factor = torch.where(gn > 0, target / ratio.clamp_min(1e-30), torch.zeros_like(gn))
            g = g * factor.view(-1, *([1] * len(dims)))
            rec["cfg_norm"] = float(cn.norm())
        rec["applied_norm"] = float(g.norm())
        return output + g

    def after_step(self, state: LoopState, z_next: torch.Tensor) -> torch.Tensor:
        if self._mask_latent is None or not self._editing(state) or self._frac(state) >= self.mask_stop:
            return z_next
        z_src = state.extras["source"].trajectory[self._source_index(state) - 1]  # the level after this step
        m = self._mask_latent.to(z_next.device, z_next.dtype)
        return z_src + m * (z_next - z_src)

    # -- summary ---------------------------------------------------------------------------------
    def mean_energy(self, edit: int = -1) -> float:
        """Mean G_t over the guided steps (before each step's guidance) of an edit phase (default: the last)."""
        recs = self.history[edit] if self.history else []
        return sum(r["energy"] for r in recs) / max(1, len(recs))
