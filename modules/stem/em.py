"""Numerical core of STEM inversion: EM over a whole video's self-attention tokens.

Given the keys ``k`` and values ``v`` of every token of a video (``M = F*H*W``), estimate a compact
set of ``K`` bases per head by an expectation-maximisation (soft spherical k-means) iteration

    mu_hat = mu / (||mu|| + 1e-4)
    E-step:  Z   = softmax_K(k mu_hat^T / tau)                 (M, K), rows sum to 1
    M-step:  Zb  = Z / (sum_tokens Z + 1e-4)                    columns normalised
             mu  = Zb^T k                                       (K, d)

repeated ``iters`` times; the value bases ``mu_V = Zb^T v`` come from the final responsibilities
(same M-step, one matmul with ``[k, 1, v]``).  STEM attention lets the queries attend to
``(mu, mu_V)`` instead of the ``M`` tokens: ``softmax(q mu^T / sqrt(d)) mu_V``.

Implementation notes
--------------------
* All heads (and whatever is folded into the batch) go through one ``bmm`` per step.
* ``1/tau`` and the normalisation of ``mu`` are fused into one small ``(K, d)`` tensor, so each
  E-step is exactly one ``(M, d) x (d, K)`` matmul plus a softmax.
* The column sums ``sum_tokens Z`` come out of the M-step matmul for free: the tokens are stored
  once as ``[k, 1, v]``, and ``Z^T [k, 1]`` gives ``(Z^T k, colsum)`` (``Z^T [k, 1, v]`` on the
  last iteration also gives ``Z^T v``).  Per iteration: 2 matmuls of size ``M x d x K``.
* Token chunking accumulates the *unnormalised* ``Z^T [k, 1, v]`` over chunks (``baddbmm``) and
  divides by the column sum at the end -- mathematically identical to the unchunked update.
* Memory: the ``O(M K)`` responsibilities only ever exist for one token chunk (a reused buffer;
  the softmax runs in place on it); the ``O(M d)`` token matrix ``[k, 1, v]`` is stored once.
* Low-precision inputs (fp16/bf16) are upcast once into that token matrix in ``compute_dtype``
  (fp32 by default); the softmax subtracts the row max and the sums over tokens are fp32, so
  large magnitudes and long videos stay finite.  Outputs are returned in the input dtype.
"""

from __future__ import annotations

import math
import warnings
from typing import List, Optional

import torch
import torch.nn.functional as F

__all__ = ["em_bases", "stem_attention", "DEFAULT_CHUNK_ELEMENTS"]

_EPS = 1e-4
_LOGIT_FLOOR = 70.0  # e^-70 / K stays a normal fp32 number (> 1.2e-38) for K < 3e7
# Auto-chunking budget: largest number of responsibility entries (groups * tokens * K) held at
# once when ``token_chunk`` is not given.  2**25 fp32 entries = 128 MiB (16384 tokens x 8 heads x
# 256 bases).  Measured (em_bases, 61,440 tokens, 8 heads, K = 256, R = 5, 2-core CPU shared with
# other jobs): chunk 1k / 4k / 16k / unchunked = 18.9 / 8.3 / 7.2 / 6.6 s with 2 threads (each op
# is a thread-pool synchronisation, costly on a loaded machine) and 4.0 / 5.3 / 5.3 / 5.5 s with 1
# thread (small chunks stay in cache).  Large chunks are the robust default.
DEFAULT_CHUNK_ELEMENTS = 1 << 25


def _check_args(k: torch.Tensor, v: Optional[torch.Tensor], tau: float, iters: int, init: str) -> None:
    if not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"STEM EM: temperature tau must be a finite number > 0, got tau={tau!r}")
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"STEM EM: iters (number of EM iterations R) must be an integer >= 1, got {iters!r}")
    if init not in ("gaussian", "tokens"):
        raise ValueError(f"STEM EM: init must be 'gaussian' or 'tokens', got {init!r}")
    if k.dim() < 2:
        raise ValueError(f"STEM EM: keys must be (..., M, d), got shape {tuple(k.shape)}")
    if v is not None and v.shape[:-1] != k.shape[:-1]:
        raise ValueError(
            f"STEM EM: keys {tuple(k.shape)} and values {tuple(v.shape)} must agree on all but the last dim"
        )


def _init_bases(
    k: torch.Tensor, K: int, init: str, generator: Optional[torch.Generator], dtype: torch.dtype
) -> torch.Tensor:
    """Initial bases ``(G, K, d)`` in ``dtype`` from keys ``(G, M, d)`` (already in ``dtype``)."""
    G, M, d = k.shape
    if init == "tokens":
        return k[:, :K, :].to(dtype=dtype, copy=True)
    # Per (group, channel) mean/std over tokens (one pass over k).
    std, mean = torch.std_mean(k, dim=1, keepdim=True, correction=0)  # (G, 1, d)
    gen_device = generator.device if generator is not None else k.device
    noise = torch.randn((G, K, d), generator=generator, device=gen_device, dtype=dtype)
    noise = noise.to(k.device)
    return noise.mul_(std).add_(mean)


def _scaled_unit_bases(mu: torch.Tensor, inv_tau: float) -> torch.Tensor:
    """``mu / (||mu|| + 1e-4) / tau`` -- normalisation and temperature fused in one (K, d) op."""
    denom = torch.linalg.vector_norm(mu, dim=-1, keepdim=True).add_(_EPS).mul_(1.0 / inv_tau)
    return mu / denom


def em_bases(
    k: torch.Tensor,
    v: Optional[torch.Tensor] = None,
    num_bases: int = 256,
    tau: float = 0.01,
    iters: int = 5,
    generator: Optional[torch.Generator] = None,
    token_chunk: Optional[int] = None,
    init: str = "gaussian",
    return_history: bool = False,
    compute_dtype: torch.dtype = torch.float32,
    max_chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
):
    """EM bases of a video's keys/values.

    Args:
        k: keys ``(..., M, d)``, typically ``(B, heads, M, d)``; leading dims are independent
            problems (fold layers / batch items / heads there).
        v: values with the same shape as ``k`` except possibly the last dim (``None``: keys only).
        num_bases: K; clamped to M with a warning if larger.
        tau: temperature of the E-step softmax (> 0).
        iters: number of EM iterations R (>= 1).
        generator: RNG for the Gaussian initialisation (fresh bases every call).
        token_chunk: process tokens in chunks of this many (bounded memory).  ``None`` chooses a
            chunk automatically so that at most ``max_chunk_elements`` responsibilities live at once.
        init: ``"gaussian"`` (N(mean_k, std_k) per channel, the released code) or ``"tokens"``
            (the first K keys; used by tests).
        return_history: also return the list of objectives ``sum_n max_j k_n . mu_hat_j`` for the
            bases before each iteration and after the last one (``iters + 1`` values, fp64,
            summed over all groups).  In the hard limit (tau -> 0) this is the spherical k-means
            objective and never decreases.  Costs one extra logits pass.
        compute_dtype: dtype of the internal computation (fp32 default).

    The iterations run without autograd (as in the released code, bases are constants for the
    attention that uses them).

    Returns:
        ``(mu_k, mu_v)`` shaped ``(..., K, d)`` / ``(..., K, d_v)`` in the input dtype
        (``mu_v`` is ``None`` if ``v`` is ``None``); plus the history if requested.
    """
    _check_args(k, v, tau, iters, init)
    M = k.shape[-2]
    if M < 1:
        raise ValueError("STEM EM: need at least one token")
    K = int(num_bases)
    if K < 1:
        raise ValueError(f"STEM EM: num_bases must be >= 1, got {num_bases}")
    if K > M:
        warnings.warn(
            f"STEM EM: num_bases={K} > number of tokens M={M}; clamping K to {M}", stacklevel=2
        )
        K = M

    with torch.no_grad():
        return _em(k, v, K, float(tau), iters, generator, token_chunk, init, return_history,
                   compute_dtype, max_chunk_elements)


def _em(k, v, K, tau, iters, generator, token_chunk, init, return_history, cdt, max_chunk_elements):
    """Body of :func:`em_bases` (arguments validated, K clamped); runs under ``no_grad``."""
    lead = k.shape[:-2]
    M, d = k.shape[-2], k.shape[-1]
    dv = v.shape[-1] if v is not None else 0
    out_dtype = k.dtype
    G = int(math.prod(lead)) if len(lead) else 1
    k3 = k.reshape(G, M, d)
    v3 = v.reshape(G, M, dv) if v is not None else None

    if token_chunk is None:
        token_chunk = max(1, max_chunk_elements // max(1, G * K))
    token_chunk = int(token_chunk)
    if token_chunk < 1:
        raise ValueError(f"STEM EM: token_chunk must be >= 1, got {token_chunk}")

    # Tokens stored once as [k, 1, v] in the compute dtype: Z^T [k, 1] gives (Z^T k, colsum) and
    # Z^T [k, 1, v] additionally Z^T v, each in a single matmul.
    parts = [k3.to(cdt), torch.ones((G, M, 1), dtype=cdt, device=k.device)]
    if v3 is not None:
        parts.append(v3.to(cdt))
    tok = torch.cat(parts, dim=-1)  # (G, M, d + 1 + dv)
    keys = tok[..., :d]
    k1 = tok[..., : d + 1]

    mu = _init_bases(keys, K, init, generator, cdt)  # (G, K, d)
    inv_tau = 1.0 / float(tau)
    history: List[float] = []

    # Reused chunk buffers (no fresh large allocation per step): logits/responsibilities.
    chunk = min(token_chunk, M)
    buf = torch.empty(G * chunk * K, dtype=cdt, device=k.device)
    obj = [0.0]

    def logits(lo: int, hi: int, w_t: torch.Tensor):
        """k mu_hat^T / tau on tokens [lo, hi) into the reused buffer, and its row max."""
        z = torch.bmm(keys[:, lo:hi], w_t, out=buf[: G * (hi - lo) * K].view(G, hi - lo, K))
        row_max = z.amax(dim=-1, keepdim=True)  # (G, hi - lo, 1)
        if return_history:  # spherical k-means objective of the current bases (tau * max logit)
            obj[0] += row_max.double().sum().item() * tau
        return z, row_max

    def responsibilities(lo: int, hi: int, w_t: torch.Tensor) -> torch.Tensor:
        """E-step on tokens [lo, hi): Z = softmax_K(k mu_hat^T / tau), shape (G, hi - lo, K)."""
        z, row_max = logits(lo, hi, w_t)
        # Floor the logits at (row max - 70): responsibilities below e^-70 ~ 4e-31 are held there
        # instead of underflowing into denormals, which make the CPU softmax and the M-step matmul
        # 2-3x slower (at tau = 0.01 ~2% of the entries would be denormal).  Numerically invisible:
        # it changes sum_tokens Z and Z^T k by < M * 4e-31 relative to the +1e-4 in the M-step.
        torch.maximum(z, row_max.sub_(_LOGIT_FLOOR), out=z)
        # softmax along the last dim (the kernel subtracts the row max)
        if z.is_cpu:  # in place on the reused logits buffer: no fresh M x K allocation per chunk
            return torch._softmax(z, -1, False, out=z)
        return torch.softmax(z, dim=-1)

    acc = None
    denom = None
    for r in range(iters + (1 if return_history else 0)):
        w_t = _scaled_unit_bases(mu, inv_tau).transpose(1, 2)  # (G, d, K): mu_hat^T / tau
        if r == iters:  # objective of the final bases: one extra logits-only pass
            obj[0] = 0.0
            for s in range(0, M, chunk):
                logits(s, min(M, s + chunk), w_t)
            history.append(obj[0])
            break
        rhs = tok if r == iters - 1 else k1  # the last M-step also produces Z^T v
        acc = torch.zeros((G, K, rhs.shape[-1]), dtype=cdt, device=k.device)
        obj[0] = 0.0
        for s in range(0, M, chunk):
            e = min(M, s + chunk)
            z = responsibilities(s, e, w_t)
            acc.baddbmm_(z.transpose(1, 2), rhs[:, s:e])  # unnormalised Z^T [k, 1 (, v)]
        if return_history:
            history.append(obj[0])
        denom = acc[..., d : d + 1].add(_EPS)  # sum_tokens Z + 1e-4, (G, K, 1)
        mu = acc[..., :d] / denom

    mu_k = mu.to(out_dtype).reshape(*lead, K, d)
    mu_v = None
    if v3 is not None:
        mu_v = (acc[..., d + 1 :] / denom).to(v.dtype).reshape(*lead, K, dv)
    if return_history:
        return mu_k, mu_v, history
    return mu_k, mu_v


def stem_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_bases: int = 256,
    tau: float = 0.01,
    iters: int = 5,
    generator: Optional[torch.Generator] = None,
    token_chunk: Optional[int] = None,
    init: str = "gaussian",
    scale: Optional[float] = None,
    **em_kwargs,
) -> torch.Tensor:
    """STEM self-attention: queries ``(B, heads, Nq, d)`` attend to the EM bases of all ``k``/``v``.

    ``k``/``v``: ``(B, heads, M, d)`` -- every token of the video.  Returns ``(B, heads, Nq, d_v)``
    = ``softmax(q mu^T / sqrt(d)) mu_V`` (scaled_dot_product_attention with the bases as keys/values).
    """
    if q.shape[:-2] != k.shape[:-2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"stem_attention: q {tuple(q.shape)} and k {tuple(k.shape)} must share leading dims and head dim"
        )
    mu_k, mu_v = em_bases(
        k, v, num_bases=num_bases, tau=tau, iters=iters, generator=generator,
        token_chunk=token_chunk, init=init, **em_kwargs,
    )
    return F.scaled_dot_product_attention(q, mu_k.to(q.dtype), mu_v.to(q.dtype), scale=scale)
