"""Global motion by phase correlation (modules/metrics.py): synthetic shifts, sub-pixel shifts,
OpenCV's sign convention, the generator's pans, and the error against an intended motion."""
import cv2
import numpy as np
import pytest
import torch

from data.motion_clips import PAN_DIRECTIONS, Motion, MotionClips, min_canvas, render_pan
from data.photos import photo
from modules.metrics import global_displacement, motion_error, phase_correlation


def gray(name, size):
    return photo(name, size).astype(np.float64).mean(-1)


@pytest.mark.parametrize("name", ["astronaut", "retina", "hubble_deep_field"])
@pytest.mark.parametrize("dx,dy", [(1, 0), (-3, 0), (0, 2), (0, -1), (2, 2), (-1, 3), (3, -3), (0, 0)])
def test_integer_shifts(name, dx, dy):
    img = gray(name, 48)
    a = img[8:40, 8:40]
    b = img[8 - dy:40 - dy, 8 - dx:40 - dx]  # b(y + dy, x + dx) = a(y, x)
    sx, sy, peak = phase_correlation(a, b)
    assert abs(sx - dx) < 0.1 and abs(sy - dy) < 0.1
    assert 0 < peak <= 1


def test_subpixel_shift_and_opencv_convention():
    img = gray("chelsea", 64)
    a = img[16:48, 16:48]
    for dx, dy in [(0.5, 0.0), (1.5, -0.5), (-2.25, 1.0)]:
        m = np.float32([[1, 0, dx], [0, 1, dy]])  # dst(x) = src(x - d): content moves by +d
        b = cv2.warpAffine(img, m, img.shape[::-1], flags=cv2.INTER_CUBIC)[16:48, 16:48]
        sx, sy, _ = phase_correlation(a, b)
        assert abs(sx - dx) < 0.2 and abs(sy - dy) < 0.2, (dx, dy, sx, sy)
        (cx, cy), _ = cv2.phaseCorrelate(a, b)
        assert np.sign(cx) == np.sign(dx) and (dy == 0 or np.sign(cy) == np.sign(dy))


def test_every_generated_pan_is_measured_as_its_motion():
    """The generator and the measure agree: each direction at each speed within 0.1 px/frame."""
    for direction, (ux, uy) in PAN_DIRECTIONS.items():
        for s in (1, 2, 3):
            m = Motion("pan", direction, s)
            size = min_canvas(m)
            x0, y0 = (size - 32 if ux < 0 else 0), (size - 32 if uy < 0 else 0)
            v = torch.from_numpy(render_pan(photo("rocket", size), m, x0, y0))
            r = motion_error(v.numpy(), m.displacement)
            assert r["mean_endpoint_error"] < 0.1 and r["direction_rate"] == 1.0 and r["speed_error"] < 0.1
            wrong = motion_error(v.numpy(), tuple(-c for c in m.displacement))
            assert wrong["direction_rate"] == 0.0 and wrong["mean_endpoint_error"] > 1.9 * s


def test_tensor_videos_stills_and_zooms():
    ds = MotionClips(length=50, caption_dropout=0, seed=1)
    for i in range(50):
        it = ds[i]
        d = global_displacement(it["pixel_values"])  # (3, F, H, W) in [-1, 1]
        assert d.shape == (7, 2)
        if it["motion"] == "static":
            assert np.abs(d).max() < 1e-6
        elif it["motion"].startswith("zoom"):  # zooms about a fixed centre: no global translation
            assert np.linalg.norm(d, axis=1).mean() < 0.5
    r = motion_error(ds[0]["pixel_values"][None], (0.0, 0.0))
    assert not r["direction_ok"].any()  # nothing intended: no direction to be right about
    with pytest.raises(ValueError, match="one video at a time"):
        global_displacement(torch.zeros(2, 3, 8, 32, 32))
    with pytest.raises(ValueError, match="same shape"):
        phase_correlation(np.zeros((8, 8)), np.zeros((8, 9)))
