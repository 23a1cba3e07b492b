"""Spectral motion alignment (SMA) losses (spec: ../shared/METHODS.md §2; paper Eqs. 14, 16, 17).

Motion vectors are frame residuals `Δx^n = x^{n+1} − x^n` of a video tensor `(B, C, F, H, W)`
(the released code takes `|Δx|`: `abs_residual=True`). The three terms compare residuals of a
target and a prediction:

- `align_loss`: VMC's `1 − cos(Δpred, Δtarget)` with the cosine taken along time (every
  (b, c, h, w) location is an (F−1)-vector), averaged over locations;
- `global_loss`: 1-D Haar DWT along time (`pytorch_wavelets.DWT1DForward`, mode `zero`), the L1
  distance of the approximation and of every detail level, each level averaged on its own and the
  levels summed (weight 1 each);
- `local_loss`: per residual frame, the 2-D FFT over (H, W), `fftshift`ed, amplitude and raw phase
  (no wrap-around, as released) compared in L1 under the low-frequency weighting
  `ω(a,b) = [(H/2)²+(W/2)²]^δ − [(a−H/2)²+(b−W/2)²]^δ + 1`.

Everything runs in fp32 with autocast off, whatever the dtype of the inputs (bf16 under
`bf16-mixed`); gradients flow into the prediction.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


class MotionLossError(ValueError):
    """Inputs the SMA losses cannot take (too few frames, DWT levels too deep, shape mismatch)."""


MIN_FRAMES = 3  # two residuals at least: a motion "sequence" (cosine along time, DWT)


@contextlib.contextmanager
def _fp32(*tensors: torch.Tensor):
    """Autocast off on the tensors' device type; yields the tensors as fp32."""
    dev = tensors[0].device.type
    with torch.autocast(device_type=dev, enabled=False):
        yield tuple(t.float() for t in tensors)


def _check_pair(pred: torch.Tensor, target: torch.Tensor, what: str) -> None:
    if pred.shape != target.shape:
        raise MotionLossError(f"{what}: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if pred.ndim != 5:
        raise MotionLossError(f"{what}: expected (B, C, F', H, W) residuals, got shape {tuple(pred.shape)}")


def motion_vectors(x: torch.Tensor, abs_residual: bool = True) -> torch.Tensor:
    """Frame residuals `x[:, :, 1:] − x[:, :, :-1]` of `(B, C, F, H, W)` → `(B, C, F−1, H, W)` in fp32
    (absolute values when `abs_residual`, the released code's default)."""
    if x.ndim != 5:
        raise MotionLossError(f"motion_vectors: expected a video tensor (B, C, F, H, W), got shape {tuple(x.shape)}")
    if x.shape[2] < MIN_FRAMES:
        raise MotionLossError(
            f"motion_vectors: {x.shape[2]} frame(s); SMA needs at least {MIN_FRAMES} frames (two frame residuals "
            "make the shortest motion sequence). Train on clips with data.num_frames >= 3 (8 or 16 as in the paper)."
        )
    with _fp32(x) as (x,):
        d = x[:, :, 1:] - x[:, :, :-1]
        return d.abs() if abs_residual else d


def align_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """`mean(1 − cos(pred, target))` with the cosine along the time axis (dim 2) of residuals
    `(B, C, F−1, H, W)` (paper Eq. 14, VMC's loss)."""
    _check_pair(pred, target, "align_loss")
    with _fp32(pred, target) as (p, t):
        return (1.0 - F.cosine_similarity(p, t, dim=2, eps=eps)).mean()


def max_dwt_levels(length: int) -> int:
    """The deepest Haar level PyWavelets allows for a signal of `length` samples
    (`pywt.dwt_max_level(length, 'haar')`: 2 for the 7 residuals of 8 frames, 3 for 15 of 16 frames)."""
    import pywt

    return int(pywt.dwt_max_level(length, "haar"))


_DWT_CACHE: dict[int, torch.nn.Module] = {}


def _dwt(levels: int) -> torch.nn.Module:
    if levels not in _DWT_CACHE:
        from pytorch_wavelets import DWT1DForward

        _DWT_CACHE[levels] = DWT1DForward(J=levels, wave="haar", mode="zero")
    return _DWT_CACHE[levels]


def haar_dwt(x: torch.Tensor, levels: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """1-D Haar DWT along the last axis of `(N, C, L)`: (approximation, [detail level 1 (finest), ...])."""
    dwt = _dwt(levels).to(x.device)
    return dwt(x)


def check_levels(levels: int | None, num_residuals: int, where: str = "levels") -> int:
    deepest = max_dwt_levels(num_residuals)
    if levels is None:
        levels = deepest
    if not isinstance(levels, int) or levels < 1 or levels > deepest:
        frames = num_residuals + 1
        raise MotionLossError(
            f"{where} = {levels!r}: a Haar DWT of the {num_residuals} motion vectors of {frames} frames has at most "
            f"{deepest} level(s) (pywt.dwt_max_level({num_residuals}, 2)); set it to 1..{deepest}, or null for the "
            "deepest (2 for 8 frames, 3 for 16: the paper appendix's 3/4 exceed what PyWavelets allows)."
        )
    return levels


def global_loss(pred: torch.Tensor, target: torch.Tensor, levels: int | None = None) -> torch.Tensor:
    """ℓ_global (paper Eq. 16) on residuals `(B, C, F−1, H, W)`: reshaped to `(B, C·H·W, F−1)`, Haar DWT
    along time with `levels` (None: the deepest PyWavelets allows), `mean|yl − ŷl| + Σ_j mean|yh_j − ŷh_j|`."""
    _check_pair(pred, target, "global_loss")
    b, c, n, h, w = pred.shape
    levels = check_levels(levels, n)
    with _fp32(pred, target) as (p, t):
        both = torch.cat([p, t]).permute(0, 1, 3, 4, 2).reshape(2 * b, c * h * w, n)
        yl, yh = haar_dwt(both, levels)
        loss = (yl[:b] - yl[b:]).abs().mean()
        for d in yh:
            loss = loss + (d[:b] - d[b:]).abs().mean()
        return loss


def frequency_weight(h: int, w: int, delta: float = 0.05, device=None) -> torch.Tensor:
    """ω(a, b) on the fftshifted (H, W) grid (paper Eq. 17): largest (R^δ + 1) at the centre, the zero
    frequency after `fftshift`, 1 at the farthest corner; δ > 0 favours low frequencies."""
    a = torch.arange(h, device=device, dtype=torch.float32).view(-1, 1)
    bb = torch.arange(w, device=device, dtype=torch.float32).view(1, -1)
    r = ((h / 2) ** 2 + (w / 2) ** 2) ** delta
    return r - ((a - h / 2) ** 2 + (bb - w / 2) ** 2) ** delta + 1.0


def spectrum(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(amplitude, phase) of the fftshifted 2-D FFT over the last two axes, in fp32."""
    with _fp32(x) as (x,):
        f = torch.fft.fftshift(torch.fft.fft2(x, dim=(-2, -1)), dim=(-2, -1))
        return f.abs(), torch.angle(f)


def local_loss(pred: torch.Tensor, target: torch.Tensor, delta: float = 0.05) -> torch.Tensor:
    """ℓ_local (paper Eq. 17) on residuals `(B, C, F−1, H, W)`: `mean(ω·|A − Â|) + mean(ω·|P − P̂|)` of the
    fftshifted 2-D spectra of every residual frame (raw phase difference, as released)."""
    _check_pair(pred, target, "local_loss")
    with _fp32(pred, target) as (p, t):
        amp_p, ph_p = spectrum(p)
        amp_t, ph_t = spectrum(t)
        wgt = frequency_weight(p.shape[-2], p.shape[-1], delta, device=p.device)
        return (wgt * (amp_t - amp_p).abs()).mean() + (wgt * (ph_t - ph_p).abs()).mean()
