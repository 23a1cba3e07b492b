"""Timing of ONE self-attention computation at SD1.5's top UNet resolution (320 channels = 8 heads
x 40 dims, batch 1, fp32, CPU, random q/k/v) for the frame-context modes of video inversion:

* ``per_frame``      -- each frame attends within itself                    O(F (HW)^2)
* ``sparse_causal``  -- each frame attends to frame 0 and frame i-1         O(2 F (HW)^2)
* ``all_frame``      -- every token attends to every token of the video     O((F HW)^2)
* ``stemK``          -- EM bases (K = 128/256/512, tau = 0.01, R = 5) over all tokens, then every
                        query attends to the K bases                         O(F HW K (R + 1))

Run by ``python scripts/benchmark.py stem`` (results in ``benchmarks/stem.json`` and ``stem.md``).
"""

from __future__ import annotations

import json
import statistics
import time
import warnings
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from modules.stem.em import em_bases, stem_attention

HEADS, HEAD_DIM = 8, 40  # SD1.5 top resolution: 320 channels
MODES = ("per_frame", "sparse_causal", "all_frame", "stem128", "stem256", "stem512")
DEFAULT_GRID = ((8, 32, 32), (16, 32, 32), (24, 32, 32), (48, 32, 32), (24, 40, 64))


def _median_seconds(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _sdpa_query_chunked(q, k, v, q_chunk: Optional[int] = None):
    """SDPA, optionally over query chunks (bounded memory if SDPA falls back to the math kernel)."""
    if q_chunk is None or q.shape[-2] <= q_chunk:
        return F.scaled_dot_product_attention(q, k, v)
    out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
    for s in range(0, q.shape[-2], q_chunk):
        out[..., s : s + q_chunk, :] = F.scaled_dot_product_attention(q[..., s : s + q_chunk, :], k, v)
    return out


def attention_modes(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_chunk: Optional[int] = None, tau: float = 0.01,
    iters: int = 5,
) -> Dict[str, Callable[[], torch.Tensor]]:
    """Callables computing one self-attention for each mode from per-frame tensors ``(F, h, HW, d)``."""
    nf, h, hw, d = q.shape
    # whole-video layout (1, h, F*HW, d), frame-major tokens -- prepared outside the timed region
    qa, ka, va = (x.permute(1, 0, 2, 3).reshape(1, h, nf * hw, d).contiguous() for x in (q, k, v))
    prev = torch.clamp(torch.arange(nf) - 1, min=0)
    first = torch.zeros(nf, dtype=torch.long)

    def per_frame():
        return F.scaled_dot_product_attention(q, k, v)

    def sparse_causal():
        kk = torch.cat([k[first], k[prev]], dim=2)  # (F, h, 2 HW, d)
        vv = torch.cat([v[first], v[prev]], dim=2)
        return F.scaled_dot_product_attention(q, kk, vv)

    def all_frame():
        return _sdpa_query_chunked(qa, ka, va, q_chunk)

    def stem(nb):
        return lambda: stem_attention(qa, ka, va, num_bases=nb, tau=tau, iters=iters,
                                      generator=torch.Generator().manual_seed(0))

    return {
        "per_frame": per_frame,
        "sparse_causal": sparse_causal,
        "all_frame": all_frame,
        "stem128": stem(128),
        "stem256": stem(256),
        "stem512": stem(512),
    }


def bench_layer(
    out: dict,
    token_grid: Sequence[Tuple[int, int, int]] = DEFAULT_GRID,
    repeats: int = 3,
    modes: Sequence[str] = MODES,
    q_chunk: Optional[int] = None,
    seed: int = 0,
    verbose: bool = False,
) -> dict:
    """Fill ``out["layer"][str(F*H*W)][mode] = {"seconds": median}`` for every (F, H, W) of the grid."""
    layer = out.setdefault("layer", {})
    g = torch.Generator().manual_seed(seed)
    # warm-up (kernel selection, thread pool) on a small problem
    wq = torch.randn(2, HEADS, 64, HEAD_DIM, generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # K > 128 tokens is clamped here
        for fn in attention_modes(wq, wq, wq).values():
            fn()
    for nf, hh, ww in token_grid:
        tokens = nf * hh * ww
        q, k, v = (torch.randn(nf, HEADS, hh * ww, HEAD_DIM, generator=g) for _ in range(3))
        fns = attention_modes(q, k, v, q_chunk=q_chunk)
        row = layer.setdefault(str(tokens), {})
        for mode in modes:
            row[mode] = {"seconds": _median_seconds(fns[mode], repeats)}
            if verbose:
                print(f"  {nf}x{hh}x{ww} ({tokens} tokens) {mode:>13}: {row[mode]['seconds']:.3f} s", flush=True)
    return out


def bench_em_breakdown(
    out: dict, frames: int = 24, hw: Tuple[int, int] = (40, 64), num_bases: int = 256, iters: int = 5,
    tau: float = 0.01, repeats: int = 3, token_chunk: Optional[int] = None, seed: int = 0,
) -> dict:
    """Per-iteration cost of the EM (E-step matmul, softmax, M-step matmul) vs the whole call.

    Stores ``out["em_breakdown"] = {tokens, num_bases, per_iter: {...}, em_total, stem_total}`` in
    seconds.  The per-op timings reproduce the inner loop of :func:`em_bases` on the same chunks.
    """
    g = torch.Generator().manual_seed(seed)
    M = frames * hw[0] * hw[1]
    G, d, K = HEADS, HEAD_DIM, num_bases
    q, k, v = (torch.randn(1, G, M, d, generator=g) for _ in range(3))
    from modules.stem.em import _LOGIT_FLOOR, DEFAULT_CHUNK_ELEMENTS

    chunk = token_chunk or max(1, DEFAULT_CHUNK_ELEMENTS // (G * K))
    chunk = min(chunk, M)
    tok = torch.cat([k[0], torch.ones(G, M, 1), v[0]], dim=-1)
    keys, k1 = tok[..., :d], tok[..., : d + 1]
    mu = torch.randn(G, K, d, generator=g)
    w_t = (mu / (mu.norm(dim=-1, keepdim=True) + 1e-4) / tau).transpose(1, 2)
    buf = torch.empty(G * chunk * K)
    acc = torch.zeros(G, K, d + 1)

    def loop(do_logits=True, do_softmax=True, do_mstep=True):
        for s in range(0, M, chunk):
            e = min(M, s + chunk)
            z = buf[: G * (e - s) * K].view(G, e - s, K)
            if do_logits:
                torch.bmm(keys[:, s:e], w_t, out=z)
            if do_softmax:  # row max, logit floor (no denormals), in-place softmax -- as in em_bases
                floor = z.amax(dim=-1, keepdim=True).sub_(_LOGIT_FLOOR)
                torch.maximum(z, floor, out=z)
                torch._softmax(z, -1, False, out=z)
            if do_mstep:
                acc.baddbmm_(z.transpose(1, 2), k1[:, s:e])

    def loop_fresh_softmax():  # softmax timed on fresh logits (not on already-normalised rows)
        loop(True, False, False)
        return loop(False, True, False)

    loop()
    logits = _median_seconds(lambda: loop(True, False, False), repeats)
    softmax = _median_seconds(loop_fresh_softmax, repeats) - logits
    loop()  # the buffer now holds real responsibilities (last chunk) for the M-step timing
    mstep = _median_seconds(lambda: loop(False, False, True), repeats)
    full = _median_seconds(lambda: loop(), repeats)
    em_total = _median_seconds(lambda: em_bases(k, v, num_bases=K, tau=tau, iters=iters, generator=g), repeats)
    stem_total = _median_seconds(
        lambda: stem_attention(q, k, v, num_bases=K, tau=tau, iters=iters, generator=g), repeats
    )
    out["em_breakdown"] = {
        "tokens": M, "num_bases": K, "iters": iters, "chunk": chunk,
        "per_iter": {"e_matmul": logits, "softmax": softmax, "m_matmul": mstep, "iteration": full},
        "em_total": em_total, "stem_total": stem_total,
    }
    return out


def format_table(out: dict, modes: Sequence[str] = MODES) -> str:
    lines = []
    header = f"{'tokens':>8} | " + " | ".join(f"{m:>13}" for m in modes) + " | stem256/all"
    lines.append(header)
    lines.append("-" * len(header))
    for tokens, row in sorted(out.get("layer", {}).items(), key=lambda kv: int(kv[0])):
        cells = [f"{row[m]['seconds']:>12.3f}s" if m in row else f"{'-':>13}" for m in modes]
        ratio = ""
        if "stem256" in row and "all_frame" in row:
            ratio = f"{row['stem256']['seconds'] / row['all_frame']['seconds']:.3f}"
        lines.append(f"{tokens:>8} | " + " | ".join(cells) + f" | {ratio:>11}")
    bd = out.get("em_breakdown")
    if bd:
        pi = bd["per_iter"]
        lines.append("")
        lines.append(
            f"EM breakdown ({bd['tokens']} tokens, K={bd['num_bases']}, chunk={bd['chunk']}): per iteration "
            f"E-matmul {pi['e_matmul']:.3f}s + softmax {pi['softmax']:.3f}s + M-matmul {pi['m_matmul']:.3f}s "
            f"(together {pi['iteration']:.3f}s); em_bases R={bd['iters']} {bd['em_total']:.3f}s; "
            f"stem_attention {bd['stem_total']:.3f}s"
        )
    return "\n".join(lines)
