"""SAVE's spectral shift: W = U diag(σ) Vᵀ frozen, only δ trains, Ŵ = U diag(ReLU(σ + δ)) Vᵀ.

`SpectralShiftLinear` replaces an `nn.Linear` in place: it keeps U, σ, Vᵀ (fp32 buffers) and the
bias, not the original weight, and rebuilds Ŵ once per call (frames are folded into the batch,
so once per layer forward, not per frame).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpectralShiftLinear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("U", u.contiguous())
        self.register_buffer("S", s.contiguous())
        self.register_buffer("Vh", vh.contiguous())
        self.bias = None
        if linear.bias is not None:
            self.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.delta = nn.Parameter(torch.zeros_like(s))

    def shifted_weight(self) -> torch.Tensor:
        return (self.U * F.relu(self.S + self.delta)) @ self.Vh

    @property
    def weight(self) -> torch.Tensor:  # for code that reads `.weight` (checksums, exports)
        return self.shifted_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.shifted_weight().to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, w, b)

    def regulariser(self) -> torch.Tensor:
        """δᵀ diag(σ) δ (paper Eq. 5)."""
        return (self.delta.float() ** 2 * self.S).sum()

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.S.numel()}"


def _parent(root: nn.Module, name: str):
    *path, leaf = name.split(".")
    mod = root
    for p in path:
        mod = getattr(mod, p)
    return mod, leaf


def apply_spectral_shift(root: nn.Module, names: list[str]) -> dict[str, SpectralShiftLinear]:
    """Replace each named `nn.Linear` under `root` by a `SpectralShiftLinear`; returns them by name."""
    out = {}
    for name in names:
        parent, leaf = _parent(root, name)
        lin = getattr(parent, leaf)
        if isinstance(lin, SpectralShiftLinear):
            out[name] = lin
            continue
        if not isinstance(lin, nn.Linear):
            raise TypeError(f"{name} is {type(lin).__name__}, expected nn.Linear")
        mod = SpectralShiftLinear(lin).to(lin.weight.device)
        setattr(parent, leaf, mod)
        out[name] = mod
    return out


def spectral_layers(root: nn.Module) -> dict[str, SpectralShiftLinear]:
    return {n: m for n, m in root.named_modules() if isinstance(m, SpectralShiftLinear)}


def spectral_regulariser(root: nn.Module) -> torch.Tensor:
    layers = list(spectral_layers(root).values())
    if not layers:
        return torch.zeros(())
    return torch.stack([m.regulariser() for m in layers]).sum()
