"""SMA's loss terms (modules/losses/sma.py) against independent oracles and hand-computed values."""
import math

import numpy as np
import pytest
import pywt
import torch

from modules.losses.sma import (MotionLossError, align_loss, frequency_weight, global_loss, local_loss,
                                max_dwt_levels, motion_vectors, spectrum)


def video(seed, shape=(2, 3, 8, 6, 5)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_motion_vectors_are_frame_residuals():
    x = video(0)
    d = motion_vectors(x, abs_residual=False)
    assert d.shape == (2, 3, 7, 6, 5) and d.dtype == torch.float32
    assert torch.allclose(d[:, :, 3], x[:, :, 4] - x[:, :, 3])
    assert torch.equal(motion_vectors(x), d.abs())  # released default: |Δx|
    assert motion_vectors(x.bfloat16()).dtype == torch.float32


@pytest.mark.parametrize("frames", [1, 2])
def test_fewer_than_three_frames_is_a_clear_error(frames):
    with pytest.raises(MotionLossError, match="at least 3 frames"):
        motion_vectors(video(0, (1, 3, frames, 4, 4)))


def test_align_is_one_minus_cosine_along_time():
    p, t = video(1, (1, 2, 4, 3, 3)), video(2, (1, 2, 4, 3, 3))
    want = np.mean([1 - np.dot(p[0, c, :, i, j], t[0, c, :, i, j])
                    / (np.linalg.norm(p[0, c, :, i, j]) * np.linalg.norm(t[0, c, :, i, j]))
                    for c in range(2) for i in range(3) for j in range(3)])
    assert align_loss(p, t).item() == pytest.approx(want, abs=1e-6)
    # scaling a location's time-vector does not change it; reversing time does
    assert align_loss(3 * p, t).item() == pytest.approx(want, abs=1e-6)
    assert align_loss(p.flip(2), t).item() != pytest.approx(want, abs=1e-3)


def test_dwt_levels_follow_pywavelets():
    for n in range(1, 40):
        assert max_dwt_levels(n) == pywt.dwt_max_level(n, "haar")
    assert max_dwt_levels(7) == 2 and max_dwt_levels(15) == 3  # 8 and 16 frames (released README)


@pytest.mark.parametrize("levels", [None, 1, 2])
def test_global_loss_against_pywt_wavedec(levels):
    p, t = motion_vectors(video(3)), motion_vectors(video(4))
    b, c, n, h, w = p.shape
    J = levels or pywt.dwt_max_level(n, "haar")
    to_seq = lambda x: x.permute(0, 1, 3, 4, 2).reshape(b, c * h * w, n).double().numpy()  # noqa: E731
    cp = pywt.wavedec(to_seq(p), "haar", level=J, mode="zero", axis=-1)
    ct = pywt.wavedec(to_seq(t), "haar", level=J, mode="zero", axis=-1)
    want = sum(np.abs(a - bb).mean() for a, bb in zip(cp, ct))  # each level averaged on its own
    assert len(cp) == J + 1
    assert global_loss(p, t, levels).item() == pytest.approx(want, rel=1e-5)


def test_global_loss_by_hand_on_two_residuals():
    # 3 frames -> 2 residuals -> one Haar level: |Σ diff|/√2 + |Δ diff|/√2
    p = torch.tensor([1.0, 4.0, 2.0]).view(1, 1, 3, 1, 1)
    t = torch.tensor([0.0, 0.0, 3.0]).view(1, 1, 3, 1, 1)
    dp, dt = motion_vectors(p, abs_residual=False), motion_vectors(t, abs_residual=False)  # (3, -2), (0, 3)
    want = abs((3 - 2) - (0 + 3)) / math.sqrt(2) + abs((3 + 2) - (0 - 3)) / math.sqrt(2)
    assert global_loss(dp, dt).item() == pytest.approx(want, rel=1e-6)


def test_levels_too_deep_is_a_clear_error():
    d = motion_vectors(video(5))  # 8 frames -> 7 residuals -> at most 2 levels
    with pytest.raises(MotionLossError, match=r"at most 2 level.*pywt.dwt_max_level\(7"):
        global_loss(d, d, levels=3)
    with pytest.raises(MotionLossError, match="set it to 1..2"):
        global_loss(d, d, levels=0)


def test_identical_inputs_give_zero():
    d = motion_vectors(video(6))
    assert align_loss(d, d).item() == pytest.approx(0.0, abs=1e-6)
    assert global_loss(d, d).item() == 0.0
    assert local_loss(d, d).item() == 0.0


def test_pure_temporal_shift_is_seen_by_global_loss():
    # the same residual frames, one step later in time: same content, other motion timing
    target = torch.zeros(1, 2, 7, 4, 4)
    target[:, :, 2] = video(7, (1, 2, 4, 4)).abs() + 0.5
    shifted = target.roll(1, dims=2)
    assert torch.equal(shifted.sum(2), target.sum(2))  # time-averaged motion unchanged
    seen = global_loss(shifted, target).item()
    assert seen > 0.25 * global_loss(torch.zeros_like(target), target).item() > 0
    assert global_loss(target, target).item() == 0.0


def test_frequency_weight_by_hand():
    h, w, delta = 8, 6, 0.05
    wgt = frequency_weight(h, w, delta)
    r = ((h / 2) ** 2 + (w / 2) ** 2) ** delta
    assert wgt[h // 2, w // 2].item() == pytest.approx(r + 1)  # zero frequency after fftshift: the largest
    assert wgt[0, 0].item() == pytest.approx(1.0)  # farthest corner
    assert wgt[2, 1].item() == pytest.approx(r - ((2 - 4) ** 2 + (1 - 3) ** 2) ** delta + 1)
    assert wgt.argmax().item() == (h // 2) * w + w // 2


def _shift_amplitude(frame: torch.Tensor, bins: list[tuple[int, int]], c: float) -> torch.Tensor:
    """Add `c` to the amplitude of the given (unshifted) FFT bins and their conjugates, phase kept."""
    f = torch.fft.fft2(frame.double())
    h, w = frame.shape
    for a, b in bins:
        for i, j in {(a, b), ((-a) % h, (-b) % w)}:
            f[i, j] = f[i, j] * (1 + c / f[i, j].abs())
    return torch.fft.ifft2(f).real.float()


def test_high_frequency_differences_weigh_less_than_low_frequency_ones():
    h = w = 16
    target = video(8, (1, 1, 3, h, w))
    low, high = target.clone(), target.clone()
    for n in range(3):
        low[0, 0, n] = _shift_amplitude(target[0, 0, n], [(1, 0)], 5.0)  # next to the zero frequency
        high[0, 0, n] = _shift_amplitude(target[0, 0, n], [(7, 6)], 5.0)  # near the Nyquist corner
    # the same amplitude change (5 on two bins per frame), phases untouched
    for x in (low, high):
        amp, _ = spectrum(x)
        amp_t, ph_t = spectrum(target)
        assert (amp - amp_t).abs().sum().item() == pytest.approx(3 * 2 * 5.0, rel=1e-3)
    l_low, l_high = local_loss(low, target).item(), local_loss(high, target).item()
    assert 0 < l_high < l_low
    wgt = frequency_weight(h, w)
    # amplitude term by hand: Σ ω(bins)·5 / (frames·H·W) (the phase term is ~0)
    s = lambda a, b: wgt[(a + h // 2) % h, (b + w // 2) % w].item()  # noqa: E731  (fftshifted index)
    assert l_low == pytest.approx(5 * (s(1, 0) + s(-1, 0)) / (h * w), rel=2e-2)
    assert l_high == pytest.approx(5 * (s(7, 6) + s(-7, -6)) / (h * w), rel=2e-2)


def test_gradients_reach_the_prediction_through_tweedie():
    torch.manual_seed(0)
    z0 = video(9, (1, 4, 8, 8, 8))
    noise = torch.randn_like(z0)
    a = torch.tensor(0.6)
    zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
    eps_hat = (noise + 0.3 * torch.randn_like(noise)).requires_grad_(True)
    x0_hat = (zt - (1 - a).sqrt() * eps_hat) / a.sqrt()
    terms = {
        "align": align_loss(motion_vectors(eps_hat), motion_vectors(noise)),
        "global": global_loss(motion_vectors(x0_hat), motion_vectors(z0)),
        "local": local_loss(motion_vectors(x0_hat), motion_vectors(z0)),
    }
    for name, loss in terms.items():
        (g,) = torch.autograd.grad(loss, eps_hat, retain_graph=True)
        assert torch.isfinite(g).all() and g.abs().sum() > 0, name


def test_losses_run_in_fp32_under_autocast():
    p, t = motion_vectors(video(10).bfloat16()), motion_vectors(video(11))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for f in (align_loss, global_loss, local_loss):
            assert f(p, t).dtype == torch.float32


def test_shape_mismatch_is_refused():
    with pytest.raises(MotionLossError, match="differ in shape"):
        local_loss(torch.zeros(1, 1, 2, 4, 4), torch.zeros(1, 1, 2, 4, 5))
