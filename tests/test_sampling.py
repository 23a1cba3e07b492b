"""The DDIM loop's arithmetic, checked with the exact denoiser of Gaussian data."""
import torch
from diffusers import DDIMScheduler

from modules.models.tiny import sd_scheduler
from modules.sampling import DDIMLoop, SamplingCallback


def gaussian_denoiser(scheduler, s: float):
    """ε*(z_t) for data ~ N(0, s² I): sqrt(1-ᾱ)·z / (ᾱ s² + 1 - ᾱ)."""
    alphas = scheduler.alphas_cumprod.double()

    def eps(z, t, cond):
        a = alphas[int(t)]
        return ((1 - a).sqrt() * z.double() / (a * s**2 + 1 - a)).to(z.dtype)

    return eps


def relative_mse(a, b):
    return float(((a - b) ** 2).mean() / (b**2).mean())


def reconstruction_error(steps: int, s: float = 1.0) -> float:
    sch = sd_scheduler()
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(1, 4, 8, 16, 16, generator=g, dtype=torch.float64) * s
    loop = DDIMLoop(gaussian_denoiser(sch, s), sch, num_steps=steps, progress=False)
    inv = loop.invert(z0, cond=None)
    rec = loop.sample(inv.z, cond=None, guidance_scale=1.0)
    return relative_mse(rec, z0)


def test_inversion_reconstructs_with_analytic_denoiser():
    # Measured (relative MSE at 25/50/100 steps): s=1: 1.0e-5/6.5e-7/4.1e-8;
    # s=2: 1.4e-3/3.9e-4/1.0e-4; s=0.5: 5.8e-3/1.4e-3/3.3e-4 (the approximation eps(z_{t-1}, t)
    # of inversion costs most for low-variance data).
    for s in (1.0, 2.0):
        errs = [reconstruction_error(n, s) for n in (10, 25, 50, 100)]
        assert errs[2] <= 1e-3, (s, errs)
        assert all(a > b for a, b in zip(errs, errs[1:])), (s, errs)


def test_inverted_latent_is_gaussian_noise():
    sch = sd_scheduler()
    z0 = torch.randn(1, 4, 8, 16, 16, dtype=torch.float64) * 0.5
    inv = DDIMLoop(gaussian_denoiser(sch, 0.5), sch, num_steps=50, progress=False).invert(z0, None)
    assert len(inv.trajectory) == 51
    # z_T of Gaussian data of std s under the exact flow has unit variance
    assert abs(float(inv.z.std()) - 1.0) < 0.05


def test_v_prediction_matches_epsilon():
    s = 0.5
    eps_sch = sd_scheduler()
    v_sch = DDIMScheduler.from_config(eps_sch.config, prediction_type="v_prediction")
    eps_fn = gaussian_denoiser(eps_sch, s)
    alphas = eps_sch.alphas_cumprod.double()

    def v_fn(z, t, cond):  # v = sqrt(ā) ε − sqrt(1−ā) x0, with x0 from the same ε
        a = alphas[int(t)]
        e = eps_fn(z, t, cond)
        x0 = (z - (1 - a).sqrt() * e) / a.sqrt()
        return a.sqrt() * e - (1 - a).sqrt() * x0

    z0 = torch.randn(1, 4, 4, 8, 8, dtype=torch.float64) * s
    a = DDIMLoop(eps_fn, eps_sch, 20, progress=False).invert(z0, None).z
    b = DDIMLoop(v_fn, v_sch, 20, progress=False).invert(z0, None).z
    assert torch.allclose(a, b, atol=1e-8)


def test_hooks_are_called_in_order_and_can_steer():
    sch = sd_scheduler()
    calls = []

    class Recorder(SamplingCallback):
        def on_phase_start(self, state):
            calls.append(("start", state.phase))

        def on_phase_end(self, state):
            calls.append(("end", state.phase))

        def initial_noise(self, state, z):
            return torch.zeros_like(z)

        def adjust_eps(self, state, eps):
            calls.append(("eps", state.phase, state.t))
            return eps

        def after_step(self, state, z):
            return z

    loop = DDIMLoop(gaussian_denoiser(sch, 0.5), sch, num_steps=5, callbacks=[Recorder()], progress=False)
    z0 = torch.randn(1, 4, 2, 4, 4, dtype=torch.float64)
    inv = loop.invert(z0, None)
    out = loop.sample(inv.z, None, guidance_scale=1.0)
    assert calls[0] == ("start", "invert") and calls[6] == ("end", "invert")
    assert [c[2] for c in calls[1:6]] == loop.timesteps
    assert [c[2] for c in calls[8:13]] == list(reversed(loop.timesteps))
    assert torch.count_nonzero(out) == 0  # zero initial noise under a linear denoiser stays zero
