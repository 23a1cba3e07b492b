"""Gaussian-process noise by random Fourier features (METHODS.md §3; Warped, §4, evaluates the same
functions at warped points).

One draw is a *function* of the plane, per channel independently:

    ξ(x) = sqrt(2/J) Σ_j w_j cos(⟨z_j, x⟩ + b_j),   w_j ~ N(0, 1),  b_j ~ U(0, 2π),
    z_j ~ N(0, ℓ⁻² I₂) with each coordinate truncated to |z_jk| ≤ `truncation`/ℓ (2 by default).

Marginals are N(0, 1) (exactly: E[w²]·E[2cos²] = 1 for any z); the covariance is
`E[cos⟨z, x − x'⟩] = g(Δx₁)·g(Δx₂)`, `g(a) = E[cos(z a)]` under the truncated normal: the squared
exponential `exp(−|Δ|²/(2ℓ²))` up to truncation (`covariance` computes it exactly).

The truncation is **per coordinate** (a box in frequency space, not a disc): a grid of spacing
1/R aliases nothing along either axis while every |z_k| ≤ πR, the grid's Nyquist frequency. With
the default `ℓ = 2/(π·R)` the box edge 2/ℓ is exactly πR; a smaller ℓ warns with that limit.

Coordinates: the unit square, grid point (row i, column j) ↦ (x₁, x₂) = (j/R, i/R) with R the
latent side (`side`, default max(h, w) of the grid). Points anywhere in the plane are valid.

API (small on purpose; Warped imports it):

- `GPNoise.draw(n, side, generator=..., features=3000, lengthscale=None, truncation=2.0)` — n
  independent functions (e.g. one per channel, or per batch·channel·frame);
- `noise.grid(h, w, offset=(0, 0))` → `(n, h, w)`: the separable form, two real matrix products
  per function (cos(z₁x₁ + z₂x₂ + b) = Re(e^{ib}·e^{iz₁x₁}·e^{iz₂x₂}));
- `noise.at(points)` → `(n, *S)` for points `(*S, 2)` in unit-square coordinates (the direct form,
  J cosines per point, chunked), e.g. a back-warped grid per frame `(F, h, w, 2)` → `(n, F, h, w)`;
- `grid_points(h, w, side)`: the `(h, w, 2)` coordinates `grid` evaluates at;
- `gp_noise(shape, generator, device=None)`: the training noise sampler (`modules.training.NOISE_SAMPLERS["gp"]`)
  — one independent function per (batch, channel, frame) on the trailing `(h, w)` grid;
- `covariance(delta, lengthscale, truncation)`: the exact covariance of the truncated spectrum.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import torch

DEFAULT_FEATURES = 3000
DEFAULT_TRUNCATION = 2.0


class GPNoiseError(ValueError):
    pass


def default_lengthscale(side: int) -> float:
    """ℓ = 2/(π·R): the paper's 0.004977 for R = 128; the truncation box edge 2/ℓ is the grid's Nyquist πR."""
    return 2.0 / (math.pi * side)


def nyquist_lengthscale(side: int, truncation: float = DEFAULT_TRUNCATION) -> float:
    """The smallest ℓ whose truncated frequencies (|z_k| ≤ truncation/ℓ) stay within the Nyquist
    frequency πR of a grid of spacing 1/R."""
    return truncation / (math.pi * side)


def grid_points(height: int, width: int, side: int | None = None, offset: tuple[float, float] = (0, 0),
                device=None, dtype=torch.float32) -> torch.Tensor:
    """`(height, width, 2)` unit-square coordinates (x₁, x₂) = ((j + dx)/R, (i + dy)/R), offset = (dy, dx)
    in grid cells, R = `side` (default max(height, width))."""
    side = side or max(height, width)
    rows = (torch.arange(height, device=device, dtype=torch.float64) + offset[0]) / side
    cols = (torch.arange(width, device=device, dtype=torch.float64) + offset[1]) / side
    pts = torch.stack(torch.meshgrid(cols, rows, indexing="xy"), dim=-1)  # [..., 0] = x₁ (column), [..., 1] = x₂ (row)
    return pts.to(dtype)


def _truncated_normal(shape, generator, truncation: float) -> torch.Tensor:
    """Standard normal truncated to [−truncation, truncation] by the inverse CDF (float64)."""
    lo = 0.5 * (1 + math.erf(-truncation / math.sqrt(2)))
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    return torch.special.ndtri(lo + (1 - 2 * lo) * u)


@contextlib.contextmanager
def _full_fp32_matmul():
    """TF32 (10-bit mantissa) would cost the separable form ~1e-3 of accuracy: off inside."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


@dataclass
class GPNoise:
    """`n` independent random-Fourier-feature functions (see the module docstring)."""

    z: torch.Tensor  # (n, J, 2) frequencies for (x₁, x₂)
    b: torch.Tensor  # (n, J) phases
    w: torch.Tensor  # (n, J) weights
    lengthscale: float
    side: int  # R: grid cells per unit length
    truncation: float = DEFAULT_TRUNCATION

    @classmethod
    def draw(cls, n: int, side: int, generator: torch.Generator | None = None, features: int = DEFAULT_FEATURES,
             lengthscale: float | None = None, truncation: float = DEFAULT_TRUNCATION, device=None,
             dtype: torch.dtype = torch.float32) -> "GPNoise":
        """Draw `n` functions (z, then b, then w, from `generator` on the CPU: the same seed gives the
        same functions on any device). `lengthscale` None: 2/(π·side)."""
        if int(features) < 1:
            raise GPNoiseError(f"GP noise needs at least one random feature (features/J >= 1), got {features}")
        if int(side) < 1 or int(n) < 1:
            raise GPNoiseError(f"GP noise needs side >= 1 and n >= 1 functions, got side={side}, n={n}")
        if not truncation > 0:
            raise GPNoiseError(f"truncation must be > 0 standard deviations, got {truncation}")
        ell = default_lengthscale(side) if lengthscale is None else float(lengthscale)
        if not ell > 0:
            raise GPNoiseError(f"GP noise lengthscale must be > 0, got {ell}")
        limit = nyquist_lengthscale(side, truncation)
        if ell < limit * (1 - 1e-9):
            warnings.warn(
                f"GP noise lengthscale {ell:.6g} is below the Nyquist limit {limit:.6g} of a {side}-cell grid "
                f"(frequencies up to {truncation}/ℓ = {truncation / ell:.4g} > π·R = {math.pi * side:.4g} alias on the grid); "
                f"use lengthscale >= {limit:.6g} (default 2/(π·R) = {default_lengthscale(side):.6g}).",
                stacklevel=2,
            )
        n, J = int(n), int(features)
        z = _truncated_normal((n, J, 2), generator, truncation) / ell
        b = torch.rand((n, J), generator=generator, dtype=torch.float64) * (2 * math.pi)
        w = torch.randn((n, J), generator=generator, dtype=torch.float64)
        return cls(z.to(device, dtype), b.to(device, dtype), w.to(device, dtype), ell, int(side), float(truncation))

    @property
    def n(self) -> int:
        return self.z.shape[0]

    @property
    def features(self) -> int:
        return self.z.shape[1]

    def to(self, device=None, dtype: torch.dtype | None = None) -> "GPNoise":
        return GPNoise(self.z.to(device, dtype), self.b.to(device, dtype), self.w.to(device, dtype),
                       self.lengthscale, self.side, self.truncation)

    def select(self, idx) -> "GPNoise":
        """A subset of the functions (index, slice or index tensor)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return GPNoise(self.z[idx], self.b[idx], self.w[idx], self.lengthscale, self.side, self.truncation)

    # -- evaluation ------------------------------------------------------------------------------
    def grid(self, height: int, width: int, offset: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """`(n, height, width)`: the functions on the grid (row i, column j) ↦ ((j + dx)/R, (i + dy)/R),
        offset = (dy, dx). Separable form: Re(A·B) with A[i, k] = w_k e^{i(z₂ₖ x₂ᵢ + b_k)},
        B[k, j] = e^{i z₁ₖ x₁ⱼ}, as one real product [Re A, −Im A] @ [Re B; Im B] per function."""
        dev, dt = self.z.device, self.z.dtype
        rows = (torch.arange(height, device=dev, dtype=torch.float64) + offset[0]).div(self.side).to(dt)
        cols = (torch.arange(width, device=dev, dtype=torch.float64) + offset[1]).div(self.side).to(dt)
        n, J = self.n, self.features
        out = torch.empty(n, height, width, device=dev, dtype=dt)
        step = max(1, min(n, (1 << 22) // (2 * J * (height + width))))  # functions per block (A and B ≤ 2²² elements)
        a = torch.empty(step, height, 2 * J, device=dev, dtype=dt)  # [w cos, −w sin] of the row phases
        bm = torch.empty(step, 2 * J, width, device=dev, dtype=dt)  # [cos; sin] of the column phases
        for f in range(0, n, step):
            e = min(n, f + step)
            k, z, w = e - f, self.z[f:e], self.w[f:e, None, :]
            ph_r = rows[None, :, None] * z[:, None, :, 1] + self.b[f:e, None, :]  # (k, h, J)
            ph_c = cols[None, None, :] * z[:, :, 0, None]  # (k, J, w)
            torch.cos(ph_r, out=a[:k, :, :J]).mul_(w)
            torch.sin(ph_r, out=a[:k, :, J:]).mul_(-w)
            torch.cos(ph_c, out=bm[:k, :J])
            torch.sin(ph_c, out=bm[:k, J:])
            with _full_fp32_matmul():
                torch.bmm(a[:k], bm[:k], out=out[f:e])
        return out.mul_(math.sqrt(2.0 / self.features))

    def at(self, points: torch.Tensor, chunk_elements: int | None = None) -> torch.Tensor:
        """`(n, *S)`: the functions at `points` `(*S, 2)` ((x₁, x₂) in unit-square coordinates, any
        values), by the direct form (J cosines per point). Per function, in blocks of ≤ `chunk_elements`
        phases (default 2¹⁸ on CPU, a block that stays in cache, and 2²⁵ on GPUs): the phases
        b + x₁z₁ + x₂z₂ elementwise (two `addcmul`, fp32), `cos_` and the weights in place, then a row
        sum — no (n, P, J) tensor. Every step is elementwise or a per-row reduction, so a point's value
        is bitwise the same in any set of points (BLAS `addmm`/`mv` are not: their result for a row
        depends on its place in the block); `bmm` with one column is also several times slower on CPU."""
        if points.shape[-1] != 2:
            raise GPNoiseError(f"points must have a trailing dimension of 2 (x₁, x₂), got shape {tuple(points.shape)}")
        shape = points.shape[:-1]
        pts = points.reshape(-1, 2).to(self.z.device, self.z.dtype)
        n, J, P = self.n, self.features, pts.shape[0]
        if chunk_elements is None:
            chunk_elements = 1 << (25 if self.z.device.type == "cuda" else 18)
        pstep = max(1, min(P, int(chunk_elements) // J))  # points per block
        res = pts.new_empty(n, P)
        z1, z2 = self.z[:, None, :, 0].contiguous(), self.z[:, None, :, 1].contiguous()  # (n, 1, J)
        x1, x2 = pts[:, 0:1].contiguous(), pts[:, 1:2].contiguous()  # (P, 1)
        buf = pts.new_empty(pstep, J)
        for f in range(n):
            for s in range(0, P, pstep):
                e = min(P, s + pstep)
                phase = torch.addcmul(self.b[f], x1[s:e], z1[f], out=buf[: e - s]).addcmul_(x2[s:e], z2[f])
                torch.sum(phase.cos_().mul_(self.w[f]), dim=1, out=res[f, s:e])
        return (res * math.sqrt(2.0 / self.features)).reshape(self.n, *shape)


# -- the covariance ------------------------------------------------------------------------------
def _g(a: torch.Tensor, lengthscale: float, truncation: float, nodes: int = 4001) -> torch.Tensor:
    """E[cos(z·a)] for z ~ N(0, ℓ⁻²) truncated at ±truncation/ℓ (Simpson's rule, float64)."""
    u = torch.linspace(-truncation, truncation, nodes, dtype=torch.float64)
    wts = torch.ones(nodes, dtype=torch.float64)
    wts[1:-1:2], wts[2:-1:2] = 4.0, 2.0
    pdf = torch.exp(-0.5 * u**2) * wts
    vals = torch.cos(a.double()[..., None] * u / lengthscale)
    return (vals * pdf).sum(-1) / pdf.sum()


def covariance(delta: torch.Tensor, lengthscale: float, truncation: float = DEFAULT_TRUNCATION) -> torch.Tensor:
    """Covariance of ξ at displacements `delta` `(..., 2)` (unit-square units) for the per-coordinate
    truncated spectrum: g(Δ₁)·g(Δ₂). `truncation` = inf gives exp(−|Δ|²/(2ℓ²))."""
    delta = torch.as_tensor(delta, dtype=torch.float64)
    if math.isinf(truncation):
        return torch.exp(-(delta**2).sum(-1) / (2 * lengthscale**2))
    return _g(delta[..., 0], lengthscale, truncation) * _g(delta[..., 1], lengthscale, truncation)


# -- the training sampler ------------------------------------------------------------------------
class GPNoiseSampler:
    """`(shape, generator, device=None) -> tensor`: GP noise of `shape` `(..., h, w)`, one independent
    function per leading index (batch, channel, frame), on the `(h, w)` grid with R = max(h, w).
    Parameters drawn from `generator` (CPU), evaluated on `device` (default CPU)."""

    def __init__(self, features: int = DEFAULT_FEATURES, lengthscale: float | None = None,
                 truncation: float = DEFAULT_TRUNCATION):
        if int(features) < 1:
            raise GPNoiseError(f"GP noise needs at least one random feature (features/J >= 1), got {features}")
        self.features, self.lengthscale, self.truncation = int(features), lengthscale, float(truncation)

    def __call__(self, shape: tuple, generator: torch.Generator, device=None) -> torch.Tensor:
        *lead, h, w = shape
        n = math.prod(lead) if lead else 1
        noise = GPNoise.draw(n, max(h, w), generator, self.features, self.lengthscale, self.truncation, device=device)
        return noise.grid(h, w).reshape(shape)

    def __repr__(self) -> str:
        return f"GPNoiseSampler(features={self.features}, lengthscale={self.lengthscale}, truncation={self.truncation})"


gp_noise = GPNoiseSampler()
