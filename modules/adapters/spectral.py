"""SAVE's spectral shift: W = U diag(σ) Vᵀ frozen, only δ trains, Ŵ = U diag(ReLU(σ + δ)) Vᵀ.

`SpectralShiftLinear` replaces an `nn.Linear` in place: it keeps U, σ, Vᵀ (fp32 buffers) and the
bias, not the original weight, and rebuilds Ŵ once per call (frames are folded into the batch,
so once per layer forward, not per frame). Training keeps no n×n tensor per layer for backward
(`_SpectralLinear`): only the layer input, as a plain linear layer does; and the replaced weights'
pages are handed back to the OS when they are views into a memory-mapped checkpoint
(`_release_file_pages`), so peak memory stays at or below full fine-tuning of the same layers.
"""
from __future__ import annotations

import ctypes
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn


def rebuild_weight(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Ŵ = U diag(ReLU(σ + δ)) Vᵀ in fp32 with autocast off: under `bf16-mixed` autocast would run this
    matmul in bf16 and Ŵ at δ = 0 would differ from W by ~1e-3 (relative) before the layer even
    casts it for its own (autocast) matmul."""
    with torch.autocast(device_type=U.device.type, enabled=False):
        return (U.float() * F.relu(S.float() + delta.float())) @ Vh.float()


class _SpectralLinear(torch.autograd.Function):
    """y = x Ŵᵀ + b with Ŵ = U diag(ReLU(σ + δ)) Vᵀ, differentiable in x, δ (and b).

    Plain autograd would keep Ŵ and U diag(s) (two out×in tensors per layer) alive until backward;
    here only x is saved (U, σ, Vᵀ are the module's buffers) and backward works in the rank-r basis:
    ∂L/∂δ_k = [σ_k + δ_k > 0] Σ_t (g U)_{tk} (x V)_{tk},  ∂L/∂x = g Ŵ = ((g U) diag(s)) Vᵀ.
    """

    @staticmethod
    def forward(ctx, x, U, S, Vh, delta, bias):
        w = rebuild_weight(U, S, Vh, delta).to(x.dtype)
        ctx.save_for_backward(x, U, S, Vh, delta)
        ctx.bias_dtype = None if bias is None else bias.dtype
        return F.linear(x, w, None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx, grad_out):
        with torch.autocast(device_type=grad_out.device.type, enabled=False):  # rank-r algebra in fp32
            return _SpectralLinear._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):
        x, U, S, Vh, delta = ctx.saved_tensors
        g = grad_out.reshape(-1, grad_out.shape[-1])
        shift = S + delta
        s = F.relu(shift)
        grad_x = grad_delta = grad_bias = None
        gu = None
        if ctx.needs_input_grad[4]:
            gu = g.to(U.dtype) @ U  # (T, r), in the buffers' dtype (fp32)
            xv = x.reshape(-1, x.shape[-1]).to(U.dtype) @ Vh.T  # (T, r)
            grad_delta = ((gu * xv).sum(0) * (shift > 0)).to(delta.dtype)
            del xv
        if ctx.needs_input_grad[0]:
            if gu is not None:  # g U is at hand: T·r·in, no out×in tensor
                grad_x = (gu * s) @ Vh
            else:
                grad_x = g.to(U.dtype) @ ((U * s) @ Vh)
            grad_x = grad_x.to(x.dtype).reshape(x.shape)
        if ctx.needs_input_grad[5] and ctx.bias_dtype is not None:
            grad_bias = g.sum(0).to(ctx.bias_dtype)
        return grad_x, None, None, None, grad_delta, grad_bias


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
        """Ŵ in fp32, also under autocast."""
        return rebuild_weight(self.U, self.S, self.Vh, self.delta)

    @property
    def weight(self) -> torch.Tensor:  # for code that reads `.weight` (checksums, exports)
        return self.shifted_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (self.delta.requires_grad or x.requires_grad
                                        or (self.bias is not None and self.bias.requires_grad)):
            return _SpectralLinear.apply(x, self.U, self.S, self.Vh, self.delta, self.bias)
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


_MADV_PAGEOUT = 21  # Linux >= 5.4


def _release_file_pages(tensors: list[torch.Tensor]) -> int:
    """Let the OS drop the resident pages of replaced weights that are views into a memory-mapped
    checkpoint (diffusers/safetensors load weights that way): the mapping outlives the dropped
    `nn.Linear`, so without this the original weight stays in RSS beside U, Vᵀ although nothing
    reads it. MADV_PAGEOUT never changes contents (a later read faults the pages back in from the
    file); only file-backed ranges are advised. Returns the bytes advised (0 where unsupported)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        maps = []
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[5].startswith("/"):
                    lo, hi = fields[0].split("-")
                    maps.append((int(lo, 16), int(hi, 16)))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        page = os.sysconf("SC_PAGE_SIZE")
    except (OSError, AttributeError, ValueError):
        return 0
    done = 0
    for t in tensors:
        if t.device.type != "cpu" or t.numel() == 0:
            continue
        start = t.data_ptr()
        end = start + t.numel() * t.element_size()
        if not any(lo <= start and end <= hi for lo, hi in maps):
            continue  # anonymous memory: freed with the tensor (or still in use elsewhere)
        lo, hi = -(-start // page) * page, end // page * page
        if hi > lo and libc.madvise(lo, hi - lo, _MADV_PAGEOUT) == 0:
            done += hi - lo
    return done


def apply_spectral_shift(root: nn.Module, names: list[str]) -> dict[str, SpectralShiftLinear]:
    """Replace each named `nn.Linear` under `root` by a `SpectralShiftLinear`; returns them by name."""
    out = {}
    replaced = []
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
        replaced.append(lin.weight.detach())
    _release_file_pages(replaced)
    return out


def spectral_layers(root: nn.Module) -> dict[str, SpectralShiftLinear]:
    return {n: m for n, m in root.named_modules() if isinstance(m, SpectralShiftLinear)}

