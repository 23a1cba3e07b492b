"""The one loop's arithmetic, checked with the exact denoiser of Gaussian data, against diffusers'
own schedulers (timesteps, single steps) for SD (DDIM, ε, leading), SDXL (Euler, ε,
scaled_linear) and CogVideoX (CogVideoXDDIM, v, trailing, zero terminal SNR, snr_shift_scale)."""
import pytest
import torch
from diffusers import CogVideoXDDIMScheduler, DDIMScheduler, EulerDiscreteScheduler

from modules.conditioning import Conditioning
from modules.models.tiny import sd_scheduler
from modules.sampling import (DDIMLoop, GuidanceTerm, Prediction, SamplingCallback, Schedule, from_ve, sigma_ve,
                              to_ve)


def sdxl_scheduler():
    """SDXL base 1.0's scheduler config (EulerDiscrete, ε, scaled_linear, leading, offset 1)."""
    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  prediction_type="epsilon", timestep_spacing="leading", steps_offset=1,
                                  use_karras_sigmas=False)


def cogvideox_scheduler():
    """CogVideoX-2b's scheduler config (v, trailing, zero terminal SNR, snr_shift_scale 3)."""
    return CogVideoXDDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                  clip_sample=False, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                  set_alpha_to_one=True, snr_shift_scale=3.0, timestep_spacing="trailing",
                                  steps_offset=0)


SCHEDULERS = {"sd": sd_scheduler, "sdxl": sdxl_scheduler, "cogvideox": cogvideox_scheduler}


def gaussian_denoiser(scheduler, s: float, calls: list | None = None):
    """The exact model output for data ~ N(0, s² I): E[x0|z] = √ᾱ s² z / (ᾱ s² + 1 − ᾱ)."""
    acp = scheduler.alphas_cumprod.double()
    ptype = scheduler.config.prediction_type

    def model(z, t, cond):
        if calls is not None:
            calls.append(float(t))
        a = float(acp[int(round(float(t)))])
        zd = z.double()
        x0 = a**0.5 * s**2 * zd / (a * s**2 + 1 - a)
        eps = (zd - a**0.5 * x0) / (1 - a) ** 0.5
        out = eps if ptype == "epsilon" else a**0.5 * eps - (1 - a) ** 0.5 * x0
        return out.to(z.dtype)

    return model


def relative_mse(a, b):
    return float(((a - b) ** 2).mean() / (b**2).mean())


def reconstruction_error(family: str, steps: int, s: float) -> float:
    sch = SCHEDULERS[family]()
    z0 = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * s
    loop = DDIMLoop(gaussian_denoiser(sch, s), sch, num_steps=steps, progress=False)
    inv = loop.invert(z0, cond=None)
    return relative_mse(loop.sample(inv.z, cond=None, guidance_scale=1.0), z0)


@pytest.mark.parametrize("family", ["sd", "sdxl", "cogvideox"])
def test_inversion_reconstructs_with_analytic_denoiser(family):
    # Measured relative MSE at 10/25/50/100 steps, s = 1: sd 3.8e-4/1.0e-5/6.5e-7/4.1e-8,
    # cogvideox 3.3e-3/1.1e-4/7.5e-6/5.2e-7; s = 2: sd 3.9e-4, cogvideox 5.1e-4 at 50 steps.
    for s in (1.0, 2.0):
        errs = [reconstruction_error(family, n, s) for n in (10, 25, 50, 100)]
        assert errs[2] <= 1e-3, (family, s, errs)
        assert all(a > b for a, b in zip(errs, errs[1:])), (family, s, errs)


@pytest.mark.parametrize("family", ["sd", "sdxl", "cogvideox"])
@pytest.mark.parametrize("steps", [10, 50, 7])
def test_timesteps_are_the_schedulers_own(family, steps):
    loop = DDIMLoop(gaussian_denoiser(SCHEDULERS[family](), 1.0), SCHEDULERS[family](), steps, progress=False)
    ref = SCHEDULERS[family]()
    ref.set_timesteps(steps)
    assert loop.schedule.timesteps == [float(t) for t in ref.timesteps]
    if family == "cogvideox":
        assert loop.schedule.timesteps[0] == 999 and loop.schedule.alpha[0] == 0.0  # zero terminal SNR


@pytest.mark.parametrize("family", ["sd", "cogvideox"])
def test_one_loop_step_equals_the_schedulers_step(family):
    sch = SCHEDULERS[family]()
    model = gaussian_denoiser(sch, 0.7)
    loop = DDIMLoop(model, sch, 10, progress=False)
    ref = SCHEDULERS[family]()
    ref.set_timesteps(10)
    z = torch.randn(1, 4, 2, 4, 4, dtype=torch.float64)
    for i in (0, 4, 9):  # first (ᾱ = 0 for CogVideoX), middle, last (to the final ᾱ)
        t = ref.timesteps[i]
        out = model(z, t, None)
        want = ref.step(out, t, z).prev_sample
        state = loop._state("sample", loop.schedule.timesteps, None, None, 1.0)
        state.step, state.t = i, loop.schedule.timesteps[i]
        state.alpha, state.alpha_next = loop.schedule.alpha[i], loop.schedule.alpha_next[i]
        from modules.sampling import ddim_step
        got = ddim_step(loop.predict(state, z), state.alpha_next)
        # DDIMScheduler keeps ᾱ in float32, so agreement is to float32 rounding
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-6), (i, float((got - want).abs().max()))


def test_one_loop_step_equals_euler_in_ve_coordinates():
    """SDXL's Euler scheduler steps x = z/√ᾱ; the loop's DDIM step is that same step in z."""
    sch = sdxl_scheduler()
    model = gaussian_denoiser(sch, 0.7)
    loop = DDIMLoop(model, sch, 10, progress=False)
    ref = sdxl_scheduler()
    ref.set_timesteps(10)
    z = torch.randn(1, 4, 2, 4, 4, dtype=torch.float64)
    for i in (0, 5, 9):
        a, a_next = loop.schedule.alpha[i], loop.schedule.alpha_next[i]
        assert sigma_ve(a) == pytest.approx(float(ref.sigmas[i]), rel=1e-6)
        t = ref.timesteps[i]
        ref._step_index = i
        x_next = ref.step(model(z, t, None), t, to_ve(z, a).float()).prev_sample.double()
        state = loop._state("sample", loop.schedule.timesteps, None, None, 1.0)
        state.step, state.t, state.alpha, state.alpha_next = i, t.item(), a, a_next
        from modules.sampling import ddim_step
        got = ddim_step(loop.predict(state, z), a_next)
        assert torch.allclose(got, from_ve(x_next, a_next), rtol=1e-5, atol=1e-5)


def test_prediction_is_exact_at_zero_alpha_and_consistent():
    z = torch.randn(2, 3, dtype=torch.float64)
    v = torch.randn(2, 3, dtype=torch.float64)
    p = Prediction(v, z, 0.0, "v_prediction")
    assert torch.equal(p.x0, -v) and torch.equal(p.eps, z)  # no division by √ᾱ
    for ptype in ("epsilon", "v_prediction", "sample"):
        out = torch.randn(2, 3, dtype=torch.float64)
        q = Prediction(out, z, 0.3, ptype)
        # z = √ᾱ x0 + √(1−ᾱ) ε and v = √ᾱ ε − √(1−ᾱ) x0 hold for every parameterisation
        assert torch.allclose(0.3**0.5 * q.x0 + 0.7**0.5 * q.eps, z)
        assert torch.allclose(q.v, 0.3**0.5 * q.eps - 0.7**0.5 * q.x0)
        assert torch.allclose(q.to_output(eps=q.eps), out)
    with pytest.raises(ValueError, match="undefined at ᾱ = 0"):
        Prediction(v, z, 0.0, "epsilon").x0


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

        def adjust_output(self, state, out):
            calls.append(("out", state.phase, state.t))
            assert state.prediction is not None and state.prediction.x0.shape == out.shape
            return out

    loop = DDIMLoop(gaussian_denoiser(sch, 0.5), sch, num_steps=5, callbacks=[Recorder()], progress=False,
                    keep_x0=True)
    z0 = torch.randn(1, 4, 2, 4, 4, dtype=torch.float64)
    inv = loop.invert(z0, None)
    state = loop.sample_state(inv.z, None, guidance_scale=1.0)
    assert calls[0] == ("start", "invert") and calls[6] == ("end", "invert")
    assert [c[2] for c in calls[1:6]] == loop.timesteps
    assert [c[2] for c in calls[8:13]] == list(reversed(loop.timesteps))
    assert torch.count_nonzero(state.z) == 0  # zero initial noise under a linear denoiser stays zero
    assert len(state.x0_trajectory) == 5 and len(inv.trajectory) == 6


def test_step_window_limits_per_step_hooks():
    sch = sd_scheduler()
    seen = []

    class Windowed(SamplingCallback):
        start, stop = 0.2, 0.6

        def before_step(self, state):
            seen.append(state.step)

    loop = DDIMLoop(gaussian_denoiser(sch, 1.0), sch, num_steps=10, callbacks=[Windowed()], progress=False)
    loop.sample(torch.randn(1, 4, 1, 2, 2, dtype=torch.float64), None, guidance_scale=1.0)
    assert seen == [2, 3, 4, 5]


def test_cfg_batches_conditioning_and_reports_the_cfg_term():
    sch = sd_scheduler()
    base = gaussian_denoiser(sch, 1.0)
    seen = {}

    def model(z, t, cond):  # output shifted by the "text" so CFG is visible
        seen["batch"] = cond.batch_size
        return base(z, t, None) + cond["encoder_hidden_states"].mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)

    class Peek(SamplingCallback):
        def adjust_output(self, state, out):
            seen["cfg"] = state.cfg_term.clone()
            seen["scale"] = state.guidance_scale
            return out

    cond = Conditioning({"encoder_hidden_states": torch.full((1, 3, 2), 2.0, dtype=torch.float64)})
    uncond = Conditioning({"encoder_hidden_states": torch.zeros(1, 3, 2, dtype=torch.float64)})
    DDIMLoop(model, sch, 3, callbacks=[Peek()], progress=False).sample(
        torch.randn(1, 4, 1, 2, 2, dtype=torch.float64), cond, uncond=uncond, guidance_scale=3.0)
    assert seen["batch"] == 2 and seen["scale"] == 3.0
    assert torch.allclose(seen["cfg"], torch.full_like(seen["cfg"], 2.0))


def test_guidance_with_autograd_reuses_the_same_forward():
    """A `needs_grad` callback gets the prediction with a graph from z; the loop evaluates the
    network once per step and steps with that same prediction plus the guidance term."""
    sch = sd_scheduler()
    calls = []
    model = gaussian_denoiser(sch, 1.0, calls)
    grads = []

    class PullX0ToZero(SamplingCallback):
        needs_grad = True
        stop = 0.5

        def guidance(self, state, z, pred):
            energy = (pred.x0.double() ** 2).sum()
            (g,) = torch.autograd.grad(energy, z)
            grads.append(g)
            return GuidanceTerm(z=-0.1 * g)

    zT = torch.randn(1, 4, 1, 3, 3, dtype=torch.float64)
    plain = DDIMLoop(gaussian_denoiser(sch, 1.0), sch, 6, progress=False).sample(zT, None, guidance_scale=1.0)
    guided = DDIMLoop(model, sch, 6, callbacks=[PullX0ToZero()], progress=False).sample(zT, None, guidance_scale=1.0)
    assert len(calls) == 6  # one network call per step, guidance included
    assert len(grads) == 3 and all(g.abs().sum() > 0 for g in grads)  # window: steps 0, 1, 2
    assert guided.norm() < plain.norm()  # pulled towards x0 = 0
    assert not guided.requires_grad


def test_schedule_rejects_bad_step_counts():
    for n in (0, -3, 1001):
        with pytest.raises(ValueError, match="num_inference_steps must be between 1 and 1000"):
            Schedule.from_scheduler(sd_scheduler(), n)


def test_inverted_latent_is_gaussian_noise():
    sch = sd_scheduler()
    z0 = torch.randn(1, 4, 8, 16, 16, dtype=torch.float64) * 0.5
    inv = DDIMLoop(gaussian_denoiser(sch, 0.5), sch, num_steps=50, progress=False).invert(z0, None)
    assert len(inv.trajectory) == 51
    assert abs(float(inv.z.std()) - 1.0) < 0.05


def test_v_prediction_inverts_like_epsilon():
    s = 0.5
    eps_sch = sd_scheduler()
    v_sch = DDIMScheduler.from_config(eps_sch.config, prediction_type="v_prediction")
    z0 = torch.randn(1, 4, 4, 8, 8, dtype=torch.float64) * s
    a = DDIMLoop(gaussian_denoiser(eps_sch, s), eps_sch, 20, progress=False).invert(z0, None).z
    b = DDIMLoop(gaussian_denoiser(v_sch, s), v_sch, 20, progress=False).invert(z0, None).z
    assert torch.allclose(a, b, atol=1e-8)


def test_a_multistep_scheduler_gets_ddims_grid_on_its_config():
    """SD 1.5 ships PNDM (its grid repeats a timestep); the deterministic DDIM loop takes DDIM's grid
    of the same noise schedule."""
    from diffusers import PNDMScheduler

    pndm = PNDMScheduler.from_config(sd_scheduler().config, skip_prk_steps=True)
    ddim = sd_scheduler()
    ddim.set_timesteps(10)
    assert Schedule.from_scheduler(pndm, 10).timesteps == [int(t) for t in ddim.timesteps]
