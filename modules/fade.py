"""FADE's maths on a video DiT (METHODS.md §6): the sketching-block features, their low-pass
spectrum, the energy G_t, and the per-block spectra that show the factorisation.

- `SketchFeatures` hooks the `attn1` output of the first `n_sketch` `CogVideoXBlock`s: the
  video-token self-attention output after `to_out`, before the gate and the residual (diffusers
  0.42's `CogVideoXBlock.forward`: `attn_hidden_states` of `self.attn1(...)`). A pass can stop
  right after the last sketching block's attention (`stop=True`): a private exception raised from
  that hook and caught here, so nothing past the sketching blocks runs — the gradient pass and the
  reference pass of FADE cost 3.x blocks, not 42. Under gradient checkpointing diffusers recomputes
  each block during backward and the hooks fire again (4 hooks, 8 calls): each block is captured
  once per pass, and a hook outside a pass neither captures nor stops.
- `low_pass(x, grid, keep, fft)`: FFT over (F, H, W) of the token grid (`"3d"`, the seed's 3-D
  DFT) or over (H, W) per frame (`"2d"`, the released code), fftshift, a centred box, inverse FFT,
  real part. The box keeps the bins |k| <= floor(keep·n/2) of each transformed axis (symmetric
  about DC, so a real signal stays real; keep = 2/3 is FADE's "2/3 of the spectrum"; keep = 1
  passes everything).
- `energy(feats, ref, grid, keep, fft)`: G_t = Σ_blocks mean((LP(A) − LP(A*))²) (LP is linear:
  computed once on A − A*).
- `block_spectra(...)`: energy by radial frequency of every block's attention output (3-D FFT),
  the plot of which (`scripts/fade_spectra.py`) shows which blocks are "sketching" for a model.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch

FFTMode = Literal["3d", "2d"]
FFT_MODES = ("3d", "2d")


class FADEConfigError(ValueError):
    """A FADE setting the model or the clip cannot take (named, with the fix)."""


class _StopForward(Exception):
    """Raised from the last sketching block's attention hook to end a pass early (caught here)."""


def check_keep(keep: float, where: str = "FADEGuidance") -> None:
    if not (isinstance(keep, (int, float)) and 0 < keep <= 1):
        raise FADEConfigError(f"{where}: keep must be in (0, 1] (the fraction of each frequency axis the low-pass "
                              f"keeps; FADE uses 2/3), got {keep!r}")


def check_fft(fft: str, where: str = "FADEGuidance") -> None:
    if fft not in FFT_MODES:
        raise FADEConfigError(f"{where}: fft must be '3d' (FFT over frames, height, width; the paper's 3-D DFT) or "
                              f"'2d' (per frame over height, width; the released code), got {fft!r}")


def sketch_blocks(transformer, n_sketch: int) -> list:
    """The first `n_sketch` transformer blocks; refuses n_sketch outside [1, number of blocks)."""
    blocks = getattr(transformer, "transformer_blocks", None)
    if blocks is None:
        raise FADEConfigError(
            f"FADE guides a video DiT with `transformer_blocks` (the cogvideox family); got a "
            f"{type(transformer).__name__}. Load a CogVideoX model (e.g. --model tiny-cogvideox).")
    n = len(blocks)
    if not (isinstance(n_sketch, int) and 1 <= n_sketch < n):
        raise FADEConfigError(
            f"FADEGuidance: n_sketch={n_sketch!r} but this transformer has {n} blocks; the sketching blocks must be "
            f"a strict prefix: use 1 <= n_sketch <= {n - 1} (FADE: 4 of CogVideoX-5B's 42).")
    return list(blocks[:n_sketch])


class SketchFeatures:
    """Forward hooks on `attn1` of the first `n_sketch` blocks; `run` captures one pass."""

    def __init__(self, transformer, n_sketch: int):
        self.blocks = sketch_blocks(transformer, n_sketch)
        self.n = n_sketch
        self.feats: dict[int, torch.Tensor] = {}
        self.calls = 0  # hook calls, including the recomputations of gradient checkpointing
        self._active = False
        self._stop = False
        self._handles = [b.attn1.register_forward_hook(self._hook(i)) for i, b in enumerate(self.blocks)]

    def _hook(self, i: int):
        def hook(module, args, out):
            self.calls += 1
            if not self._active or i in self.feats:  # outside a pass, or a checkpoint recomputation
                return None
            self.feats[i] = out[0] if isinstance(out, tuple) else out  # video tokens (B, F·h·w, D)
            if self._stop and i == self.n - 1:
                self._stop = False
                raise _StopForward
            return None

        return hook

    def run(self, denoiser, z: torch.Tensor, t, cond, stop: bool = True) -> list[torch.Tensor]:
        """The sketching blocks' attention outputs for one denoiser call (graph kept when grad is on);
        `stop`: end the pass after the last sketching block's attention."""
        self.feats, self._active, self._stop = {}, True, stop
        try:
            denoiser(z, torch.as_tensor(t, device=z.device), cond)
        except _StopForward:
            pass
        finally:
            self._active, self._stop = False, False
        missing = [i for i in range(self.n) if i not in self.feats]
        if missing:
            raise RuntimeError(f"FADE: no attention output captured from sketching block(s) {missing}")
        feats, self.feats = [self.feats[i] for i in range(self.n)], {}
        return feats

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "SketchFeatures":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


# -- spectra ------------------------------------------------------------------------------------
def _grid(x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    f, h, w = grid
    b, n, d = x.shape
    if n != f * h * w:
        raise ValueError(f"{n} video tokens do not fill the token grid {f}×{h}×{w}")
    return x.reshape(b, f, h, w, d)


def _dims(fft: str) -> tuple[int, ...]:
    return (1, 2, 3) if fft == "3d" else (2, 3)


def box_mask(shape: Sequence[int], keep: float, device=None) -> torch.Tensor:
    """Centred box over fftshifted axes of sizes `shape`: bins |k| <= floor(keep·n/2) (at least DC)."""
    mask = None
    for ax, n in enumerate(shape):
        k = torch.arange(n, device=device) - n // 2  # frequency of each fftshifted bin
        m = (k.abs() <= int(keep * n / 2)).float()
        view = [1] * len(shape)
        view[ax] = n
        m = m.view(view)
        mask = m if mask is None else mask * m
    return mask


def low_pass(x: torch.Tensor, grid: Sequence[int], keep: float = 2 / 3, fft: FFTMode = "3d") -> torch.Tensor:
    """Low-pass of video tokens `(B, F·h·w, D)` on the token grid: FFT, fftshift, centred box,
    inverse FFT, real part (float32; differentiable)."""
    check_keep(keep, "low_pass")
    check_fft(fft, "low_pass")
    v = _grid(x.float(), grid)
    dims = _dims(fft)
    spec = torch.fft.fftshift(torch.fft.fftn(v, dim=dims), dim=dims)
    mask = box_mask([v.shape[d] for d in dims], keep, v.device)
    mask = mask.view(*(v.shape[d] if d in dims else 1 for d in range(1, 4)), 1)
    out = torch.fft.ifftn(torch.fft.ifftshift(spec * mask, dim=dims), dim=dims).real
    return out.reshape(x.shape)


def energy(feats: Sequence[torch.Tensor], ref: Sequence[torch.Tensor], grid: Sequence[int], keep: float = 2 / 3,
           fft: FFTMode = "3d") -> torch.Tensor:
    """G = Σ_blocks mean((LP(A) − LP(A*))²) (per-element mean over batch, tokens and channels)."""
    total = None
    for a, r in zip(feats, ref):
        e = low_pass(a.float() - r.float().to(a.device), grid, keep, fft).pow(2).mean()
        total = e if total is None else total + e
    return total


def block_spectra(denoiser, transformer, z: torch.Tensor, t, cond, grid: Sequence[int], bins: int = 16,
                  keep: float = 2 / 3) -> dict:
    """Per-block spectra of the `attn1` video-token outputs of EVERY block for one denoiser call:
    `radial` (blocks × bins): share of the 3-D FFT energy (|X|², summed over channels, DC removed)
    by radial frequency (Nyquist of each axis = 1; bins over [0, √3]); `low_share`: share inside
    FADE's centred box of `keep`; `edges`: the bin edges."""
    n = len(transformer.transformer_blocks)
    feats: dict[int, torch.Tensor] = {}

    def capture(i):
        def hook(module, args, out):
            feats.setdefault(i, (out[0] if isinstance(out, tuple) else out).detach())

        return hook

    handles = [b.attn1.register_forward_hook(capture(i)) for i, b in enumerate(transformer.transformer_blocks)]
    try:
        with torch.no_grad():
            denoiser(z, torch.as_tensor(t, device=z.device), cond)
    finally:
        for h in handles:
            h.remove()
    f, h, w = grid
    axes = [torch.fft.fftshift(torch.fft.fftfreq(s)) / 0.5 for s in (f, h, w)]
    kf, kh, kw = torch.meshgrid(*axes, indexing="ij")
    radius = (kf**2 + kh**2 + kw**2).sqrt()
    edges = torch.linspace(0, 3**0.5 + 1e-6, bins + 1)
    which = torch.bucketize(radius, edges[1:-1])
    box = box_mask((f, h, w), keep)
    radial, low = [], []
    for i in range(n):
        v = _grid(feats[i].float(), grid)
        v = v - v.mean(dim=(1, 2, 3), keepdim=True)  # DC carries no structure
        power = torch.fft.fftshift(torch.fft.fftn(v, dim=(1, 2, 3)), dim=(1, 2, 3)).abs().pow(2).sum(dim=(0, 4))
        total = power.sum().clamp_min(1e-30)
        radial.append(torch.zeros(bins).index_add_(0, which.flatten(), power.flatten()) / total)
        low.append(float((power * box).sum() / total))
    return {"radial": torch.stack(radial), "low_share": low, "edges": edges}


def spectral_distance(spec, z_a: torch.Tensor, z_b: torch.Tensor, cond, t, n_sketch: int = 4, keep: float = 2 / 3,
                      fft: FFTMode = "3d") -> float:
    """The low-frequency spectral distance FADE minimises, between two latents at timestep `t`:
    G of the sketching blocks' attention outputs of `z_a` vs `z_b` (same conditioning, no gradient,
    each pass stopped after the last sketching block)."""
    grid = spec.token_grid(z_a.shape)
    with SketchFeatures(spec.network, n_sketch) as sf, torch.no_grad():
        a = sf.run(spec, z_a, t, cond)
        b = sf.run(spec, z_b, t, cond)
        return float(energy(a, b, grid, keep, fft))
