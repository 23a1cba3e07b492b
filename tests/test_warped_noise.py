"""Noise warping modes behind one switch (modules/noise/warping.py)."""
import pytest
import torch

from modules.flow import VideoFlow
from modules.noise.warping import NOISE_MODES, NoiseWarpError, warped_noise

GP = {"features": 400}


def shifted(first: torch.Tensor, j: int, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """frame 0 moved by j·(dy, dx) (content moves), and where that is defined."""
    h, w = first.shape[-2:]
    out, ok = torch.zeros_like(first), torch.zeros(h, w, dtype=torch.bool)
    sy, sx = j * dy, j * dx
    ys, ye, xs, xe = max(0, sy), min(h, h + sy), max(0, sx), min(w, w + sx)
    out[..., ys:ye, xs:xe] = first[..., ys - sy:ye - sy, xs - sx:xe - sx]
    ok[ys:ye, xs:xe] = True
    return out, ok


@pytest.mark.parametrize("dy,dx", [(0, 1), (1, 2), (-2, 1)])
def test_gp_and_nearest_equal_the_shifted_noise_exactly_for_integer_translations(dy, dx):
    f, h, w = 5, 12, 16
    to_first = VideoFlow.translation(f, h, w, dy=dy, dx=dx).to_first()
    shape = (2, 3, f, h, w)
    gp = warped_noise("gp", shape, to_first, seed=3, gp=GP)
    near = warped_noise("nearest", shape, to_first, seed=3, gp=GP)
    assert torch.equal(gp[:, :, 0], near[:, :, 0])
    for j in range(f):
        ref, ok = shifted(gp[:, :, 0], j, dy, dx)
        assert torch.equal(gp[:, :, j][..., ok], ref[..., ok])  # bit-exact
        assert torch.equal(near[:, :, j][..., ok], ref[..., ok])
        assert torch.equal(to_first[1][j], ok)
        if j and not ok.all():  # out of frame: gp evaluates its function, nearest draws fresh noise
            assert not torch.equal(gp[:, :, j][..., ~ok], near[:, :, j][..., ~ok])


def test_bilinear_is_exact_on_integer_shifts_and_shrinks_variance_between_grid_points():
    f, h, w = 3, 32, 32
    shape = (1, 4, f, h, w)
    ints = VideoFlow.translation(f, h, w, dx=1.0).to_first()
    bil = warped_noise("bilinear", shape, ints, seed=0, base="white")
    near = warped_noise("nearest", shape, ints, seed=0, base="white")
    ok = ints[1]
    assert torch.equal(bil[0][:, ok], near[0][:, ok])
    half = VideoFlow.translation(f, h, w, dx=0.5).to_first()
    bil = warped_noise("bilinear", shape, half, seed=0, base="white")
    gp = warped_noise("gp", shape, half, seed=0)
    # white noise averaged with its neighbour at a half-pixel shift: variance 1/2; GP warping keeps 1
    assert 0.35 < bil[:, :, 1][..., half[1][1]].var() < 0.65
    assert 0.8 < gp[:, :, 1].var() < 1.2


def test_fixed_and_resample():
    shape = (1, 3, 4, 8, 8)
    fixed = warped_noise("fixed", shape, seed=1, base="white")
    assert all(torch.equal(fixed[:, :, 0], fixed[:, :, j]) for j in range(4))
    res = warped_noise("resample", shape, seed=1, gp=GP)
    assert not torch.equal(res[:, :, 0], res[:, :, 1])
    assert torch.equal(res, warped_noise("resample", shape, seed=1, gp=GP))  # seeded


def test_modes_switch_and_bad_input():
    assert NOISE_MODES == ("fixed", "resample", "nearest", "bilinear", "gp")
    with pytest.raises(NoiseWarpError, match="one of"):
        warped_noise("warped", (1, 3, 2, 8, 8))
    with pytest.raises(NoiseWarpError, match="no white-noise form"):
        warped_noise("gp", (1, 3, 2, 8, 8), base="white")
    with pytest.raises(NoiseWarpError, match="needs the map"):
        warped_noise("nearest", (1, 3, 2, 8, 8))
    with pytest.raises(NoiseWarpError, match="to_latent"):
        warped_noise("gp", (1, 3, 2, 8, 8), VideoFlow.translation(2, 16, 16).to_first())
