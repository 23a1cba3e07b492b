"""Noise for every frame of a video, warped along the flow (METHODS.md §4), behind one switch.

`warped_noise(mode, shape, to_first, ...)` → `(B, C, F, h, w)` for latents `(B, C, F, h, w)`, where
`to_first = (D, valid)` maps each frame's latent grid to frame-0 coordinates (`VideoFlow.to_first()`
on the latent flow): point p of frame j is frame 0's `p + D[j](p)`; `valid` marks the points whose
chain stayed inside the frame.

Modes (`base` = the noise the baselines start from: `gp` or `white`):

- `fixed`: every frame gets frame 0's noise;
- `resample`: independent noise per frame;
- `nearest`: frame 0's noise at the nearest grid point of `p + D[j](p)`;
- `bilinear`: frame 0's noise interpolated bilinearly there (variance shrinks between grid points:
  the known flaw of this baseline, kept as in the paper's comparison);
- `gp`: the *same* random-Fourier-feature function evaluated at `p + D[j](p)` — no interpolation,
  unit variance everywhere (`u^(j) = u^(j−1) ∘ T_j⁻¹`). Frame 0 is the function on its grid.

Points whose chain left the frame (`valid` False) cannot be read from frame 0's grid: `nearest` and
`bilinear` fill them with fresh noise of the base kind (an independent draw on frame j's grid);
`gp` simply evaluates its function there. For integer translations `gp` and `nearest` (base `gp`)
give exactly frame 0's noise shifted on the in-frame points (`tests/test_warped_noise.py`).

GP functions: one per (batch item, channel), shared by all frames, `R = max(h, w)` latent cells per
unit length; every frame (frame 0 too) is evaluated by `GPNoise.at` on float64-exact coordinates,
so equal coordinates give bit-equal noise.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Literal

import torch

from modules.flow import bilinear_sample
from modules.noise.gp import DEFAULT_FEATURES, DEFAULT_TRUNCATION, GPNoise

NOISE_MODES = ("fixed", "resample", "nearest", "bilinear", "gp")
NoiseMode = Literal["fixed", "resample", "nearest", "bilinear", "gp"]
BaseNoise = Literal["gp", "white"]


class NoiseWarpError(ValueError):
    pass


def _points(h: int, w: int, disp: torch.Tensor, side: int) -> torch.Tensor:
    """Unit-square points `(F, h, w, 2)` = ((j + dx)/R, (i + dy)/R), computed in float64."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    d = disp.double()
    return torch.stack([(xs + d[..., 0]) / side, (ys + d[..., 1]) / side], dim=-1).float()


def _gp_functions(n: int, side: int, generator: torch.Generator, gp) -> GPNoise:
    cfg = asdict(gp) if gp is not None and not isinstance(gp, dict) else dict(gp or {})
    return GPNoise.draw(n, side, generator, features=cfg.get("features", DEFAULT_FEATURES),
                        lengthscale=cfg.get("lengthscale"), truncation=cfg.get("truncation", DEFAULT_TRUNCATION))


def _fresh(base: str, b: int, c: int, f: int, h: int, w: int, g: torch.Generator, gp) -> torch.Tensor:
    """Independent noise `(B, C, F, h, w)`: white, or one GP function per (item, channel, frame) on its grid."""
    if base == "white":
        return torch.randn((b, c, f, h, w), generator=g)
    fn = _gp_functions(b * c * f, max(h, w), g, gp)
    return fn.at(_points(h, w, torch.zeros(h, w, 2), max(h, w))).reshape(b, c, f, h, w)


def warped_noise(mode: str, shape: tuple, to_first: tuple[torch.Tensor, torch.Tensor] | None = None, seed: int = 0,
                 base: str = "gp", gp=None) -> torch.Tensor:
    """Noise `shape` = `(B, C, F, h, w)` for `mode` (see the module docstring). `to_first`: `(D (F, h, w, 2),
    valid (F, h, w))` on the latent grid (needed by nearest / bilinear / gp). `gp`: a `GPConfig` or dict
    (features, lengthscale, truncation). Seeded: the same seed gives the same frame 0 in every mode but
    `resample` (and `fixed`/`nearest`/`bilinear`/`gp` share frame 0 when `base` is gp)."""
    if mode not in NOISE_MODES:
        raise NoiseWarpError(f"noise mode must be one of {NOISE_MODES}, got {mode!r}")
    if base not in ("gp", "white"):
        raise NoiseWarpError(f"base noise must be 'gp' or 'white', got {base!r}")
    if mode == "gp" and base != "gp":
        raise NoiseWarpError("noise mode 'gp' warps a GP function; it has no white-noise form (base_noise: gp), "
                             "or use nearest / bilinear warping of white noise")
    if len(shape) != 5:
        raise NoiseWarpError(f"shape must be (B, C, F, h, w), got {tuple(shape)}")
    b, c, f, h, w = shape
    g = torch.Generator().manual_seed(int(seed))
    if mode == "resample":
        return _fresh(base, b, c, f, h, w, g, gp)
    side = max(h, w)
    if base == "gp":
        fn = _gp_functions(b * c, side, g, gp)
        first = fn.at(_points(h, w, torch.zeros(h, w, 2), side)).reshape(b, c, 1, h, w)
    else:
        fn, first = None, torch.randn((b, c, 1, h, w), generator=g)
    if mode == "fixed":
        return first.expand(b, c, f, h, w).clone()
    if to_first is None:
        raise NoiseWarpError(f"noise mode {mode!r} needs the map of every frame to frame 0 (VideoFlow.to_first())")
    disp, valid = to_first
    if tuple(disp.shape) != (f, h, w, 2) or tuple(valid.shape) != (f, h, w):
        raise NoiseWarpError(f"to_first must be (D {(f, h, w, 2)}, valid {(f, h, w)}) on the latent grid, got "
                             f"{tuple(disp.shape)} and {tuple(valid.shape)}; convert the pixel flow with "
                             "VideoFlow.to_latent(vae factor)")
    if mode == "gp":
        return fn.at(_points(h, w, disp, side)).reshape(b, c, f, h, w)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    cx, cy = xs + disp[..., 0].double(), ys + disp[..., 1].double()
    src = first[:, :, 0]  # (B, C, h, w)
    out = torch.empty(b, c, f, h, w)
    if mode == "nearest":
        xi, yi = cx.round(), cy.round()
        inside = valid & (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
        idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long()  # (F, h, w)
        out[:] = src.reshape(b, c, h * w)[:, :, idx.reshape(-1)].reshape(b, c, f, h, w)
    else:
        coords = torch.stack([cx, cy], -1).float()  # (F, h, w, 2)
        vals, inside = bilinear_sample(src.reshape(1, b * c, h, w).expand(f, -1, -1, -1), coords)
        inside = inside & valid
        out[:] = vals.reshape(f, b, c, h, w).permute(1, 2, 0, 3, 4)
    if not bool(inside.all()):
        fill = _fresh(base, b, c, f, h, w, g, gp)
        out = torch.where(inside[None, None], out, fill)
    out[:, :, 0] = src  # frame 0 is itself, exactly
    return out
