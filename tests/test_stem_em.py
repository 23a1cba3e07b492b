"""Numerical tests of the STEM EM core (modules/stem/em.py)."""

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modules.stem import em_bases, stem_attention  # noqa: E402


@pytest.fixture(autouse=True)
def _single_thread():
    # The tensors here are tiny: one intra-op thread avoids thread-pool sync latency, which on a
    # loaded 2-core machine costs ~10 ms per op.  Restored afterwards.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clustered(seed: int, groups: int, M: int, d: int, clusters: int, spread: float = 0.3):
    """Keys drawn around `clusters` random centres (so k-means has something to find)."""
    g = _gen(seed)
    centres = 3.0 * torch.randn(groups, clusters, d, generator=g)
    assign = torch.randint(0, clusters, (groups, M), generator=g)
    k = torch.gather(centres, 1, assign[..., None].expand(-1, -1, d))
    return (k + spread * torch.randn(groups, M, d, generator=g)).unsqueeze(0)


def test_k_equals_m_hard_limit_is_full_attention():
    # K = M bases initialised at the tokens and tau -> 0: for token m, k_m . mu_hat_j = |k_m| cos(k_m, k_j)
    # is maximal (strictly, for non-parallel keys) at j = m, so Z is the identity, every basis stays its
    # own token (mu = k / (1 + 1e-4)), mu_V = v / (1 + 1e-4), and STEM attention = full attention.
    g = _gen(0)
    B, h, M, d, Nq = 2, 3, 48, 16, 20
    q, k, v = (torch.randn(B, h, n, d, generator=g) for n in (Nq, M, M))
    mu_k, mu_v = em_bases(k, v, num_bases=M, tau=1e-4, iters=3, init="tokens")
    torch.testing.assert_close(mu_k, k / (1 + 1e-4), rtol=0, atol=1e-6)
    torch.testing.assert_close(mu_v, v / (1 + 1e-4), rtol=0, atol=1e-6)

    out = stem_attention(q, k, v, num_bases=M, tau=1e-4, iters=3, init="tokens")
    full = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1) @ v
    assert out.shape == (B, h, Nq, d)
    # only deviation: the 1/(1 + 1e-4) shrink of keys and values -> ~1e-4 relative
    torch.testing.assert_close(out, full, rtol=1e-3, atol=5e-4)
    # the same holds with token chunking
    out_c = stem_attention(q, k, v, num_bases=M, tau=1e-4, iters=3, init="tokens", token_chunk=7)
    torch.testing.assert_close(out_c, full, rtol=1e-3, atol=5e-4)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_hard_limit_spherical_kmeans_objective_never_decreases(seed):
    M, d, K, iters = 400, 8, 12, 8
    k = _clustered(seed, groups=2, M=M, d=d, clusters=8)
    g = _gen(100 + seed)
    _, _, hist = em_bases(k, None, num_bases=K, tau=1e-5, iters=iters, generator=g, return_history=True)
    assert len(hist) == iters + 1
    hist = torch.tensor(hist, dtype=torch.float64)
    # J(mu) = sum_n max_j k_n . mu_hat_j.  The only slack is the +1e-4 in mu_hat = mu/(|mu|+1e-4):
    # each basis' scale |mu|/(|mu|+1e-4) moves by < 1e-4 / |mu| ~ 1e-5, i.e. |dJ| <~ 1e-5 * sum|k|.
    slack = 1e-5 * k.norm(dim=-1).sum().item()
    diffs = hist[1:] - hist[:-1]
    assert torch.all(diffs >= -slack), f"objective decreased: {hist.tolist()}"
    assert hist[-1] > hist[0] + 1.0, f"EM did not improve the random init: {hist.tolist()}"
    # the objective is bounded by sum_n |k_n| (unit bases)
    assert hist[-1] <= k.norm(dim=-1).sum().item() + 1e-6


@pytest.mark.parametrize(
    "tau,dtype,tol",
    [
        # fp64: chunking is mathematically identical -> agreement to rounding
        (0.01, torch.float64, 1e-10),
        # fp32: summation order differs -> agreement to fp32 rounding
        # (at tau = 0.01 the fp32 EM map amplifies rounding by ~1/tau per step: near-tied tokens
        # may flip, so the fp32 comparison uses a smoother temperature)
        (0.5, torch.float32, 1e-5),
    ],
)
def test_chunked_equals_unchunked(tau, dtype, tol):
    g = _gen(7)
    k = torch.randn(2, 4, 600, 16, generator=g, dtype=dtype)
    v = torch.randn(2, 4, 600, 24, generator=g, dtype=dtype)
    kw = dict(num_bases=64, tau=tau, iters=5, compute_dtype=dtype)
    ref_k, ref_v = em_bases(k, v, generator=_gen(3), **kw)
    assert ref_v.shape == (2, 4, 64, 24) and ref_v.dtype == dtype
    for chunk in (128, 333):
        ck, cv = em_bases(k, v, generator=_gen(3), token_chunk=chunk, **kw)
        torch.testing.assert_close(ck, ref_k, rtol=tol, atol=tol)
        torch.testing.assert_close(cv, ref_v, rtol=tol, atol=tol)


def test_bases_reproducible_with_generator_and_fresh_per_call():
    k = torch.randn(1, 2, 300, 8, generator=_gen(0))
    a, _ = em_bases(k, None, num_bases=16, generator=_gen(5))
    b, _ = em_bases(k, None, num_bases=16, generator=_gen(5))
    c, _ = em_bases(k, None, num_bases=16, generator=_gen(6))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_heads_batched_equals_per_head():
    g = _gen(11)
    k = torch.randn(2, 3, 200, 8, generator=g)
    v = torch.randn(2, 3, 200, 8, generator=g)
    mk, mv = em_bases(k, v, num_bases=20, tau=0.1, iters=4, init="tokens")
    for b in range(2):
        for h in range(3):
            hk, hv = em_bases(k[b, h], v[b, h], num_bases=20, tau=0.1, iters=4, init="tokens")
            torch.testing.assert_close(hk, mk[b, h], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(hv, mv[b, h], rtol=1e-5, atol=1e-6)


def test_bases_are_convex_combinations_of_tokens():
    # mu = Zbar^T k with Zbar columns summing to <= 1: each basis lies (up to the 1e-4 shrink) in
    # the per-channel [min, max] box of its head's tokens.
    g = _gen(2)
    k = torch.randn(1, 4, 500, 16, generator=g) * 2 + 1
    mu, _ = em_bases(k, None, num_bases=32, tau=0.05, iters=5, generator=_gen(0))
    lo = torch.minimum(k.amin(dim=2, keepdim=True), torch.zeros(()))
    hi = torch.maximum(k.amax(dim=2, keepdim=True), torch.zeros(()))
    assert torch.all(mu >= lo - 1e-5) and torch.all(mu <= hi + 1e-5)


def test_long_video_bf16_finite_and_close_to_fp32():
    # 120 frames x 16 tokens, 8 heads of 40 dims, K = 256, in bf16.
    g = _gen(0)
    B, h, M, d = 1, 8, 120 * 16, 40
    q, k, v = (torch.randn(B, h, M, d, generator=g) for _ in range(3))
    out16 = stem_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), generator=_gen(1))
    assert out16.dtype == torch.bfloat16 and out16.shape == (B, h, M, d)
    assert torch.isfinite(out16).all()
    # soft-ish temperature so that bf16 rounding of the keys does not flip assignments wholesale
    out16s = stem_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), tau=1.0, generator=_gen(1))
    out32s = stem_attention(q, k.bfloat16().float(), v.bfloat16().float(), tau=1.0, generator=_gen(1))
    assert (out16s.float() - out32s).abs().max().item() < 5e-2


@pytest.mark.parametrize("dtype,scale", [(torch.float32, 1e4), (torch.bfloat16, 1e4), (torch.float16, 300.0)])
def test_large_magnitude_inputs_finite(dtype, scale):
    # logits k . mu_hat / tau reach ~scale * sqrt(d) / tau (1e8 here): the softmax must subtract
    # the max, and the token sums must not overflow (fp32 accumulation).
    g = _gen(4)
    q, k, v = (scale * torch.randn(1, 2, 3000, 40, generator=g) for _ in range(3))
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    mu_k, mu_v = em_bases(k, v, num_bases=64, generator=_gen(0))
    assert torch.isfinite(mu_k).all() and torch.isfinite(mu_v).all()
    out = stem_attention(q / scale, k, v, num_bases=64, generator=_gen(0))  # bounded logits in SDPA
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert out.abs().max().item() <= 1.01 * v.float().abs().max().item()


def test_k_greater_than_m_clamps_with_warning():
    k = torch.randn(1, 2, 10, 4, generator=_gen(0))
    with pytest.warns(UserWarning, match="clamping K"):
        mu_k, mu_v = em_bases(k, k, num_bases=256)
    assert mu_k.shape == (1, 2, 10, 4) and mu_v.shape == (1, 2, 10, 4)


@pytest.mark.parametrize("tau", [0.0, -0.1])
def test_nonpositive_tau_raises(tau):
    k = torch.randn(1, 1, 10, 4)
    with pytest.raises(ValueError, match="tau"):
        em_bases(k, k, num_bases=4, tau=tau)
    with pytest.raises(ValueError, match="tau"):
        stem_attention(k, k, k, num_bases=4, tau=tau)


def test_bad_iters_raises():
    k = torch.randn(1, 1, 10, 4)
    with pytest.raises(ValueError, match="iters"):
        em_bases(k, k, num_bases=4, iters=0)
