"""GP noise by random Fourier features (modules/noise/gp.py): marginals, covariance of the truncated
spectrum, exact integer shifts, separable = direct form, seeding, bad input."""
import math

import pytest
import torch

from modules.noise.gp import (
    GPNoise,
    GPNoiseError,
    GPNoiseSampler,
    covariance,
    default_lengthscale,
    grid_points,
    nyquist_lengthscale,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_marginals_are_standard_normal_within_the_sampling_error():
    # N independent functions at one point: N iid samples of a variance-1, mean-0 variable (exactly, for
    # any z: E[w²]·E[2cos²(·+b)] = 1). Standard errors: 1/√N for the mean, √(2/N) for the variance
    # (the sum of J = 3000 features has excess kurtosis 1.5/J ≈ 0); tolerance 4 standard errors.
    n = 10000
    x = GPNoise.draw(n, 32, gen(1)).at(torch.tensor([[0.3, 0.7]]))[:, 0].double()
    assert abs(x.mean().item()) < 4 / math.sqrt(n)
    assert abs(x.var().item() - 1) < 4 * math.sqrt(2 / n)


def test_the_lengthscale_defaults_to_the_paper_value():
    assert default_lengthscale(128) == pytest.approx(0.004977, abs=5e-6)  # paper: 0.004977 for R = 128
    assert nyquist_lengthscale(128) == pytest.approx(default_lengthscale(128))  # 2/ℓ = πR: the grid's Nyquist


def test_correlation_at_0_to_4_pixels_matches_the_truncated_spectrum():
    side, n = 32, 256
    noise = GPNoise.draw(n, side, gen(2)).grid(side, side).double()
    ell = default_lengthscale(side)
    var = noise.pow(2).mean()
    for d in range(5):
        horiz = (noise[:, :, : side - d] * noise[:, :, d:]).mean() / var
        vert = (noise[:, : side - d, :] * noise[:, d:, :]).mean() / var
        diag = (noise[:, : side - d, : side - d] * noise[:, d:, d:]).mean() / var
        k = covariance(torch.tensor([d / side, 0.0]), ell).item()
        kd = covariance(torch.tensor([d / side, d / side]), ell).item()
        assert abs(horiz.item() - k) < 0.03 and abs(vert.item() - k) < 0.03, (d, horiz.item(), vert.item(), k)
        assert abs(diag.item() - kd) < 0.03, (d, diag.item(), kd)
    # the test tells the truncation apart: untruncated, the correlation at 1 px would be exp(−π²/8) = 0.291
    one = ((noise[:, :, :-1] * noise[:, :, 1:]).mean() / var).item()
    assert covariance(torch.tensor([1 / side, 0.0]), ell).item() == pytest.approx(0.3407, abs=1e-3)
    assert abs(one - math.exp(-math.pi**2 / 8)) > 0.03
    assert covariance(torch.tensor([1 / side, 0.0]), ell, truncation=math.inf).item() == pytest.approx(
        math.exp(-math.pi**2 / 8))


def test_covariance_is_exact_against_a_direct_integral():
    # g(a) = E[cos(z a)], z ~ N(0, ℓ⁻²) truncated at ±2/ℓ, by an independent (trapezoid) quadrature
    ell, a = 0.1, 0.13
    u = torch.linspace(-2, 2, 200001, dtype=torch.float64)
    pdf = torch.exp(-u**2 / 2)
    g = torch.trapezoid(torch.cos(u * a / ell) * pdf, u) / torch.trapezoid(pdf, u)
    assert covariance(torch.tensor([a, 0.0]), ell).item() == pytest.approx(g.item(), abs=1e-7)
    assert covariance(torch.tensor([a, a]), ell).item() == pytest.approx(g.item() ** 2, abs=1e-7)


def test_an_integer_shifted_grid_is_exactly_the_shifted_noise():
    noise = GPNoise.draw(4, 24, gen(3))
    for h, w, (dy, dx) in [(16, 16, (0, 1)), (24, 20, (3, 5)), (31, 17, (7, 0))]:
        shifted = noise.grid(h, w, offset=(dy, dx))
        big = noise.grid(h + dy, w + dx)
        assert torch.equal(shifted, big[:, dy:, dx:])
    # the direct form at shifted points too
    pts = grid_points(10, 12, side=24, offset=(2, 3))
    assert torch.equal(noise.at(pts), noise.at(grid_points(12, 15, side=24))[:, 2:, 3:])


def test_separable_and_direct_forms_agree_to_fp32_tolerance():
    noise = GPNoise.draw(3, 40, gen(4))
    grid = noise.grid(40, 40)
    direct = noise.at(grid_points(40, 40))
    # fp32 phases up to 2/ℓ ≈ 126 rad: ~1e-5 per feature, √J of them times √(2/J)
    assert (grid - direct).abs().max() < 1e-4
    exact = GPNoise(noise.z.double(), noise.b.double(), noise.w.double(), noise.lengthscale, noise.side).grid(40, 40)
    assert (grid.double() - exact).abs().max() < 1e-4


def test_points_off_the_grid_batch_over_frames():
    noise = GPNoise.draw(2, 16, gen(5))
    pts = torch.rand(3, 5, 7, 2, generator=gen(6)) * 2 - 0.5  # 3 "frames" of warped points, some outside the square
    vals = noise.at(pts)
    assert vals.shape == (2, 3, 5, 7)
    one = noise.at(pts[1, 2, 3])  # a single point
    assert torch.allclose(vals[:, 1, 2, 3], one, atol=1e-6)
    # small chunks change nothing
    assert torch.allclose(noise.at(pts, chunk_elements=1000), vals, atol=2e-5)


def test_same_seed_same_function_other_seed_another():
    a = GPNoise.draw(4, 16, gen(7))
    b = GPNoise.draw(4, 16, gen(7))
    c = GPNoise.draw(4, 16, gen(8))
    assert torch.equal(a.grid(16, 16), b.grid(16, 16))
    assert not torch.allclose(a.grid(16, 16), c.grid(16, 16))
    pts = torch.rand(9, 2, generator=gen(9)) * 3
    assert torch.equal(a.at(pts), b.at(pts))


def test_the_training_sampler_draws_one_function_per_batch_channel_frame():
    sampler = GPNoiseSampler()
    x = sampler((2, 4, 3, 16, 16), gen(10))
    assert x.shape == (2, 4, 3, 16, 16)
    y = sampler((2, 4, 3, 16, 16), gen(10))
    assert torch.equal(x, y)
    flat = x.reshape(24, 16, 16)
    # every slice is its own function: the same seed's draw of 24 functions in order
    assert torch.equal(flat, GPNoise.draw(24, 16, gen(10)).grid(16, 16))
    # neighbours correlate (≈ 0.34), different channels do not
    nb = (x[..., :-1] * x[..., 1:]).mean() / x.pow(2).mean()
    ch = (x[:, :1] * x[:, 1:2]).mean()
    assert abs(nb.item() - 0.34) < 0.1 and abs(ch.item()) < 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_same_draw_on_the_gpu():
    cpu = GPNoise.draw(4, 64, gen(11))
    gpu = GPNoise.draw(4, 64, gen(11), device="cuda")
    assert torch.allclose(cpu.grid(64, 64), gpu.grid(64, 64).cpu(), atol=1e-4)
    pts = torch.rand(2, 64, 64, 2, generator=gen(12))
    assert torch.allclose(cpu.at(pts), gpu.at(pts).cpu(), atol=1e-4)
    assert torch.allclose(GPNoiseSampler()((2, 4, 1, 32, 32), gen(13), device="cuda").cpu(),
                          GPNoiseSampler()((2, 4, 1, 32, 32), gen(13)), atol=1e-4)


def test_bad_input_is_a_clear_error():
    with pytest.raises(GPNoiseError, match="at least one random feature"):
        GPNoise.draw(1, 16, gen(), features=0)
    with pytest.raises(GPNoiseError, match="at least one random feature"):
        GPNoiseSampler(features=0)
    with pytest.raises(GPNoiseError, match="lengthscale must be > 0"):
        GPNoise.draw(1, 16, gen(), lengthscale=0.0)
    with pytest.warns(UserWarning, match=r"below the Nyquist limit 0\.0397"):
        GPNoise.draw(1, 16, gen(), lengthscale=0.01)
    with pytest.raises(GPNoiseError, match="trailing dimension of 2"):
        GPNoise.draw(1, 16, gen()).at(torch.zeros(4, 3))
