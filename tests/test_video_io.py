import numpy as np
import pytest
import torch

from data import video_io
from data.video_io import (
    VideoError,
    read_video,
    resize_center_crop,
    side_by_side,
    to_frames,
    to_tensor,
    video_fps,
    write_video,
)

BACKENDS = ["decord", "pyav"]


def smooth_video(num_frames=10, height=48, width=64):
    """A smooth moving colour gradient (compresses nearly losslessly even with 4:2:0 chroma)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for n in range(num_frames):
        r = 128 + 90 * np.sin((x + 2 * n) / 11.0)
        g = 128 + 90 * np.cos((y - n) / 9.0)
        b = 60 + 2.5 * x + 1.0 * n
        frames.append(np.stack([r, g, b], axis=-1))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def counter_video(num_frames=10, size=32):
    """Frame n is a flat grey of value 20 * n + 10 (robust to compression)."""
    return np.stack([np.full((size, size, 3), 20 * n + 10, np.uint8) for n in range(num_frames)])


def psnr_db(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return np.inf if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def smooth_mp4(tmp_path_factory):
    frames = smooth_video()
    path = write_video(tmp_path_factory.mktemp("vid") / "smooth.mp4", frames, fps=8)
    return path, frames


@pytest.mark.parametrize("backend", BACKENDS)
def test_mp4_round_trip(smooth_mp4, backend):
    path, frames = smooth_mp4
    back = read_video(path, backend=backend)
    assert back.dtype == np.uint8 and back.shape == frames.shape == (10, 48, 64, 3)
    assert psnr_db(back, frames) > 35
    assert video_fps(path) == pytest.approx(8.0)


def test_write_returns_path_is_atomic_and_overwrites(tmp_path):
    target = tmp_path / "sub" / "out.mp4"
    assert write_video(target, counter_video(4), fps=12) == target
    write_video(target, counter_video(6), fps=12)  # overwrite in place
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.mp4"]  # no temp files left
    assert read_video(target).shape == (6, 32, 32, 3)
    assert video_fps(target) == pytest.approx(12.0)


def test_failed_write_leaves_no_file(tmp_path):
    with pytest.raises(ValueError, match="to_frames"):
        write_video(tmp_path / "bad.mp4", np.zeros((2, 8, 8, 3), np.float32) - 0.5)
    assert list(tmp_path.iterdir()) == []


def test_odd_size_is_padded_to_even(tmp_path):
    frames = smooth_video(4, 15, 17)
    back = read_video(write_video(tmp_path / "odd.mp4", frames))
    assert back.shape == (4, 16, 18, 3)
    assert psnr_db(back[:, :15, :17], frames) > 35


@pytest.mark.parametrize("backend", BACKENDS)
def test_uniform_sampling(tmp_path, backend):
    path = write_video(tmp_path / "count.mp4", counter_video(10))
    clip = read_video(path, num_frames=3, stride=2, start=1, backend=backend)
    assert clip.shape == (3, 32, 32, 3)
    np.testing.assert_allclose(clip.reshape(3, -1).mean(1), [30, 70, 110], atol=2)
    tail = read_video(path, stride=3, start=2, backend=backend)  # num_frames=None: to the end
    np.testing.assert_allclose(tail.reshape(len(tail), -1).mean(1), [50, 110, 170], atol=2)
    # the exact number of required frames is accepted
    assert len(read_video(path, num_frames=4, stride=3, start=0, backend=backend)) == 4


def test_pyav_fallback_when_decord_missing(smooth_mp4, monkeypatch):
    path, frames = smooth_mp4
    monkeypatch.setattr(video_io, "_import_decord", lambda: None)
    assert video_io._pick_backend(path, None) == "pyav"
    back = read_video(path, num_frames=5, stride=2)
    assert back.shape == (5, 48, 64, 3) and psnr_db(back, frames[::2]) > 35
    assert video_fps(path) == pytest.approx(8.0)


def test_gif_write_and_read(tmp_path):
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    frames = np.stack([np.broadcast_to(np.array(c, np.uint8), (12, 20, 3)) for c in colors])
    path = write_video(tmp_path / "anim.gif", frames, fps=5)
    back = read_video(path)
    assert back.shape == (4, 12, 20, 3) and back.dtype == np.uint8
    np.testing.assert_array_equal(back, frames)
    np.testing.assert_array_equal(read_video(path, num_frames=2, stride=2, start=1), frames[[1, 3]])
    assert video_fps(path) == pytest.approx(5.0)


def test_missing_file_error(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(VideoError, match="not found") as err:
        read_video(missing)
    assert str(missing) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_decord_failure_falls_back_to_pyav(tmp_path):
    # decord cannot copy frames 16 px wide; read_video retries with PyAV instead of failing
    frames = counter_video(5, size=16)
    back = read_video(write_video(tmp_path / "narrow.mp4", frames), backend="decord")
    assert back.shape == (5, 16, 16, 3) and psnr_db(back, frames) > 35


@pytest.mark.parametrize("backend", BACKENDS)
def test_garbage_file_error(tmp_path, backend):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(np.random.RandomState(0).bytes(4096))
    with pytest.raises(VideoError) as err:
        read_video(bad, backend=backend)
    msg = str(err.value)
    assert str(bad) in msg and "ffmpeg -i in -c:v libx264 out.mp4" in msg
    with pytest.raises(VideoError, match="garbage.mp4"):
        video_fps(bad)
    with pytest.raises(VideoError, match="garbage.mp4"):
        video_io.num_video_frames(bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_file_error(tmp_path, smooth_mp4, backend):
    path, _ = smooth_mp4
    data = path.read_bytes()
    cut = tmp_path / "truncated.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError) as err:
        read_video(cut, backend=backend)
    assert "truncated.mp4" in str(err.value) and "libx264" in str(err.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_too_short_error(smooth_mp4, backend):
    path, _ = smooth_mp4  # 10 frames
    with pytest.raises(VideoError) as err:
        read_video(path, num_frames=4, stride=3, start=1, backend=backend)  # needs 1 + 3*3 + 1 = 11
    msg = str(err.value)
    assert str(path) in msg
    assert "10 frames available" in msg and "11 are required" in msg
    assert "num_frames" in msg and "stride" in msg and "start" in msg
    with pytest.raises(VideoError, match="start"):
        read_video(path, start=10, backend=backend)


def test_bad_arguments():
    with pytest.raises(ValueError, match="stride"):
        video_io._indices("x.mp4", 10, 2, 0, 0)
    with pytest.raises(ValueError, match="num_frames"):
        video_io._indices("x.mp4", 10, 0, 1, 0)


def test_side_by_side():
    a = np.zeros((3, 10, 8, 3), np.uint8)
    b = np.full((3, 10, 6, 3), 50, np.uint8)
    c = np.full((3, 20, 20, 3), 100, np.uint8)  # resized to height 10 (width 10)
    out = side_by_side(a, b, c, gap=2)
    assert out.shape == (3, 10, 8 + 2 + 6 + 2 + 10, 3) and out.dtype == np.uint8
    assert (out[:, :, 8:10] == 255).all() and (out[:, :, 16:18] == 255).all()
    assert (out[:, :, 10:16] == 50).all() and (out[:, :, 18:] == 100).all()
    assert side_by_side(a, b, gap=0).shape == (3, 10, 14, 3)
    with pytest.raises(ValueError, match="same number of frames"):
        side_by_side(a, b[:2])


def test_tensor_conversions():
    frames = np.random.RandomState(0).randint(0, 256, (5, 6, 7, 3)).astype(np.uint8)
    t = to_tensor(frames)
    assert t.shape == (3, 5, 6, 7) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    assert t[:, 0, 0, 0].tolist() == pytest.approx((frames[0, 0, 0] / 127.5 - 1).tolist())
    np.testing.assert_array_equal(to_frames(t), frames)
    np.testing.assert_array_equal(to_frames(t[None]), frames)  # batch of one
    clamped = to_frames(torch.tensor([-3.0, 0.0, 5.0]).view(3, 1, 1, 1).expand(3, 2, 2, 2))
    assert clamped.shape == (2, 2, 2, 3) and clamped[0, 0, 0].tolist() == [0, 128, 255]
    with pytest.raises(ValueError, match="C, F, H, W"):
        to_frames(torch.zeros(3, 4, 4))


def test_resize_center_crop():
    frames = np.random.RandomState(1).randint(0, 256, (2, 64, 128, 3)).astype(np.uint8)
    out = resize_center_crop(frames, 32, 32)
    assert out.shape == (2, 32, 32, 3)
    # 64x128 -> 32x64 (exact 2x2 average with INTER_AREA), then the centre 32 columns
    blocks = frames.reshape(2, 32, 2, 64, 2, 3).astype(np.float64).mean(axis=(2, 4))
    np.testing.assert_allclose(out, blocks[:, :, 16:48], atol=1)
    assert resize_center_crop(frames, 64, 128).shape == (2, 64, 128, 3)
    up = resize_center_crop(frames[:, :8, :8], 20, 10)  # enlarge, then crop the width
    assert up.shape == (2, 20, 10, 3)


def test_bundled_samples_match_their_generator():
    import json

    from data import make_samples
    from data.clip_dataset import SAMPLES_DIR

    records = [json.loads(line) for line in (SAMPLES_DIR / "metadata.jsonl").read_text().splitlines()]
    assert len(records) == 9
    for rec in records:
        name = rec["video"][: -len(".mp4")]
        expected = make_samples.zoom_frames() if name == "zoom_coffee_12f" else make_samples.pan_frames(name[4:])
        frames = read_video(SAMPLES_DIR / rec["video"])
        assert frames.shape == expected.shape and psnr_db(frames, expected) > 35, rec["video"]
        assert video_fps(SAMPLES_DIR / rec["video"]) == pytest.approx(8.0)
        flow = np.load(SAMPLES_DIR / rec["flow"])
        assert flow.dtype == np.float32 and flow.shape == (len(frames) - 1, *frames.shape[1:3], 2)
        # frame_n(y, x) == frame_{n+1}(y + dy, x + dx) exactly on the generated frames
        dx, dy = (int(v) for v in flow[0, 0, 0])
        assert (flow == flow[0, 0, 0]).all() and (dx, dy) in {(-2, 0), (-3, -1)}
        h, w = expected.shape[1:3]
        np.testing.assert_array_equal(
            expected[:-1, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)],
            expected[1:, max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)],
        )
