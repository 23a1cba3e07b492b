"""The video world's training clips (data/motion_clips.py): captions, geometry, sign convention,
determinism, the canvas rule for fast pans, zooms."""
import cv2
import numpy as np
import pytest
import torch

from data.motion_clips import (
    MOTION_WORDS, PAN_DIRECTIONS, MotionClipDataModule, MotionClips, Motion, all_motions, min_canvas,
    motion_caption, render_pan, render_zoom, zoom_sides,
)
from data.photos import PHOTOS, photo


def test_captions_name_the_photo_and_the_motion():
    assert motion_caption("chelsea", Motion("pan", "left", 3)) == "a photo of a cat, panning left quickly"
    assert motion_caption("rocket", Motion("pan", "up right", 1)) == "a photo of a rocket, panning up right slowly"
    assert motion_caption("coffee", Motion("zoom", "in")) == "a photo of a cup of coffee, zooming in"
    assert motion_caption("retina", Motion("static")) == PHOTOS["retina"]  # a still camera: no motion words
    words = {w for m in all_motions() for w in m.words.replace(",", " , ").split()}
    assert words | {","} == set(MOTION_WORDS)
    with pytest.raises(ValueError, match="pan direction"):
        Motion("pan", "sideways", 1)
    with pytest.raises(ValueError, match="speed"):
        Motion("pan", "left", 4)
    with pytest.raises(ValueError, match="unknown photo"):
        motion_caption("moon", Motion("static"))


@pytest.mark.parametrize("direction", list(PAN_DIRECTIONS))
def test_pan_content_moves_against_the_camera(direction):
    """frame_n(y, x) == frame_{n+1}(y + dy, x + dx) exactly, with (dx, dy) = Motion.displacement
    (the flow convention of modules.metrics): panning left moves the content right."""
    m = Motion("pan", direction, 2)
    canvas = photo("astronaut", min_canvas(m))
    ux, uy = PAN_DIRECTIONS[direction]
    x0, y0 = (14 if ux < 0 else 0), (14 if uy < 0 else 0)
    v = render_pan(canvas, m, x0, y0).astype(int)
    dx, dy = (int(c) for c in m.displacement)
    assert (dx, dy) == (-2 * ux, -2 * uy)
    for n in range(7):
        a, b = v[n], v[n + 1]
        # b(y + dy, x + dx) == a(y, x) on the overlap
        ys, xs = slice(max(0, -dy), 32 - max(0, dy)), slice(max(0, -dx), 32 - max(0, dx))
        yt, xt = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
        assert np.array_equal(b[yt, xt], a[ys, xs])
    with pytest.raises(ValueError, match="leaves"):
        render_pan(canvas[:40, :40], m, x0, y0)


def test_clips_are_deterministic_and_follow_the_canvas_rule():
    ds = MotionClips(length=400, seed=3)
    a, b = ds[17], ds[17]
    assert torch.equal(a["pixel_values"], b["pixel_values"]) and a["caption"] == b["caption"]
    assert a["pixel_values"].shape == (3, 8, 32, 32) and a["pixel_values"].min() >= -1 and a["pixel_values"].max() <= 1
    ds.epoch = 1
    assert not torch.equal(ds[17]["pixel_values"], a["pixel_values"])
    kinds, dropped, photos = {}, 0, set()
    for i in range(400):
        it = ds[i]
        m = it["motion"]
        kinds[m.split("_")[0]] = kinds.get(m.split("_")[0], 0) + 1
        photos.add(it["photo"])
        assert 40 <= it["scale"] <= 56
        if m.endswith("_3"):
            assert it["scale"] >= 53  # 32 + 7 × 3
        if it["caption"] == "":
            dropped += 1
        elif m == "static":
            assert it["caption"] == PHOTOS[it["photo"]]
        else:
            assert it["caption"].startswith(PHOTOS[it["photo"]] + ", ")
        if m.startswith("pan"):
            assert torch.linalg.vector_norm(it["displacement"]) > 0
        else:
            assert torch.all(it["displacement"] == 0)
    assert photos == set(PHOTOS)
    assert 0.05 < dropped / 400 < 0.16  # caption_dropout 0.1
    assert 0.05 < kinds["static"] / 400 < 0.16 and 0.1 < kinds["zoom"] / 400 < 0.21


def test_zoom_regions_shrink_when_zooming_in():
    s_in, s_out = zoom_sides(40.0, "in"), zoom_sides(40.0, "out")
    assert np.all(np.diff(s_in) < 0) and np.allclose(s_in[0] / s_in[-1], 1.4) and np.allclose(s_out, s_in[::-1])
    canvas = photo("coffee", 48)
    # a region of the frame's own size centred at (x0 + 16, y0 + 16) is the exact crop
    assert np.array_equal(render_zoom(canvas, [32.0], 5 + 16, 7 + 16)[0], canvas[7:39, 5:37])
    # zooming in magnifies: the last frame is the first frame's centre (1/1.4 of its side) enlarged
    v = render_zoom(canvas, s_in, 24, 24).astype(np.float32)
    c = 32 / 1.4
    centre = cv2.resize(v[0][int(16 - c / 2 + 0.5):int(16 + c / 2 + 0.5), int(16 - c / 2 + 0.5):int(16 + c / 2 + 0.5)],
                        (32, 32), interpolation=cv2.INTER_LINEAR)
    assert np.abs(v[-1] - centre).mean() < 0.5 * np.abs(v[-1] - v[0]).mean()
    assert np.array_equal(render_zoom(canvas, s_out, 24, 24)[-1], v[0].astype(np.uint8))


def test_datamodule_and_settings_errors():
    dm = MotionClipDataModule(batch_size=2, steps_per_epoch=3, photos=["chelsea", "rocket"])
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (2, 3, 8, 32, 32) and len(batch["caption"]) == 2
    assert set(batch["photo"]) <= {"chelsea", "rocket"}
    assert (dm.num_frames, dm.height, dm.width) == (8, 32, 32)
    with pytest.raises(ValueError, match="at least 53"):
        MotionClips(max_scale=48)
    with pytest.raises(ValueError, match="unknown photo"):
        MotionClips(photos=["moon"])
    with pytest.raises(ValueError, match="sum to at most 1"):
        MotionClips(p_static=0.7, p_zoom=0.5)


def test_position_jitter_centres_the_camera_path_on_the_photo():
    """position_jitter k: the window's path is centred on the canvas centre ± k px (clamped to the
    canvas), so every clip of one caption at one scale is nearly the same clip; zoom regions are
    centred too. None keeps paths anywhere on the canvas."""
    rng = np.random.default_rng(0)
    centred, anywhere = MotionClips(position_jitter=2, length=10), MotionClips(length=10)
    off_centre = []
    for _ in range(300):
        spec = centred.sample_spec(rng)
        if spec.motion.kind == "zoom":
            assert abs(spec.x0 - spec.scale / 2) <= 2 + 1e-9 and abs(spec.y0 - spec.scale / 2) <= 2 + 1e-9
            continue
        vx, vy = spec.motion.camera_velocity
        mid_x = spec.x0 + 3.5 * vx + 16  # the path's middle window centre (8 frames of 32 px)
        mid_y = spec.y0 + 3.5 * vy + 16
        assert abs(mid_x - spec.scale / 2) <= 3 and abs(mid_y - spec.scale / 2) <= 3
        centred.render(spec)  # every window inside the canvas (render_pan raises otherwise)
        s2 = anywhere.sample_spec(rng)
        if s2.motion.kind == "pan":
            vx, vy = s2.motion.camera_velocity
            off_centre.append(abs(s2.x0 + 3.5 * vx + 16 - s2.scale / 2))
    assert max(off_centre) > 5  # without jitter the path is anywhere
    dm = MotionClipDataModule(position_jitter=2, batch_size=2)
    dm.setup()
    assert dm.dataset.position_jitter == 2
    with pytest.raises(ValueError, match="position_jitter"):
        MotionClips(position_jitter=-1)


def test_direction_per_photo_ties_each_photo_to_one_pan_direction():
    """direction_per_photo: photo i of PHOTOS pans only in direction i (any speed), captions still name
    it; zooms and stills are unchanged; off, every photo pans every way."""
    rng = np.random.default_rng(1)
    tied, free = MotionClips(direction_per_photo=True, length=10), MotionClips(length=10)
    seen: dict[str, set] = {}
    for _ in range(400):
        spec = tied.sample_spec(rng)
        if spec.motion.kind == "pan":
            seen.setdefault(spec.photo, set()).add(spec.motion.direction)
            tied.render(spec)
    assert {p: d for p, d in seen.items()} == {p: {list(PAN_DIRECTIONS)[i]} for i, p in enumerate(PHOTOS) if p in seen}
    assert len(seen) == len(PHOTOS)
    for i in range(20):
        item = tied[i]
        if item["motion"].startswith("pan_") and item["caption"]:
            spec_dir = list(PAN_DIRECTIONS)[list(PHOTOS).index(item["photo"])]
            assert f"panning {spec_dir} " in item["caption"]
    free_dirs = {}
    for _ in range(400):
        spec = free.sample_spec(rng)
        if spec.motion.kind == "pan":
            free_dirs.setdefault(spec.photo, set()).add(spec.motion.direction)
    assert max(len(d) for d in free_dirs.values()) > 1
    dm = MotionClipDataModule(direction_per_photo=True, batch_size=2)
    dm.setup()
    assert dm.dataset.direction_per_photo
