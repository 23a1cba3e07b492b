"""Claims on the committed tiny video world (`assets/video_world/`, loaded as `tiny-video-world`);
numbers and protocol in docs/video_world.md (regenerate: scripts/video_world_results.py).

Protocol fixed before measuring (modules/video_world.py): samples through the one loop
(`modules.editing.generate`), 20 DDIM steps, CFG 4; per seed 0, 1, 2 the eight pan directions at
2 px/frame ("steadily"), direction i over photo (i + seed) mod 8, and the same photos with their
plain captions (no motion words) on the same noise. A frame shows "the named photo" when its
nearest window (any position, canvas sides 40–56) belongs to it; the motion of a clip is the
phase-correlation displacement of each consecutive frame pair (`modules.metrics.motion_error`).
Only what held on every seed is asserted; the captioned-motion claim did not hold on any seed and is
a strict xfail with the measured numbers. Slow ones: `OMP_NUM_THREADS=1 python -m pytest -q -m slow
tests/test_video_world_claims.py` (~10 min).
"""
import json

import pytest
import torch

from modules.models.tiny import video_world_path

try:
    video_world_path()
    HAVE_VIDEO_WORLD = True
except FileNotFoundError:
    HAVE_VIDEO_WORLD = False

pytestmark = pytest.mark.skipif(not HAVE_VIDEO_WORLD, reason="assets/video_world not trained "
                                "(configs/video_world/tiny.yaml)")


@pytest.fixture(scope="module")
def spec():
    from modules.models.spec import load_model

    return load_model("tiny-video-world")


def test_preset_loads_as_a_pixel_space_unet3d_with_its_card(spec):
    path = video_world_path()
    assert spec.family == "unet3d" and spec.pixel_space and spec.vae is None
    assert spec.unet.dtype == torch.float32 and spec.unet.config.in_channels == 3
    assert sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) <= 10e6
    info = json.loads((path / "model_index.json").read_text())["training"]
    card = (path / "README.md").read_text()
    assert info["steps"] > 0 and f"steps: {info['steps']}" in card and "seed: 0" in card
    assert "panning" in spec.tokenizers[0].get_vocab()


def test_reconstruction_of_the_rocket_pan(spec):
    """DDIM inversion + reconstruction (CFG 1, 20 steps) of the bundled rocket pan: ≥ 30 dB on every frame."""
    from modules.video_world import reconstruct_pan

    p = reconstruct_pan(spec, "rocket", 20)
    assert p.min() >= 30.0, p


@pytest.mark.slow
@pytest.mark.parametrize("name", list(__import__("data.photos", fromlist=["PHOTOS"]).PHOTOS))
def test_reconstruction_of_every_pan_50_steps(spec, name):
    from modules.video_world import reconstruct_pan

    assert reconstruct_pan(spec, name, 50).min() >= 30.0


@pytest.fixture(scope="module")
def study(spec):
    from modules.video_world import motion_study

    return motion_study(spec, log=lambda *a: None)["summary"]


@pytest.mark.slow
def test_samples_show_the_named_photograph(study):
    """Nearest-photo classification of every frame: the captioned photograph in ≥ 70% of frames."""
    for seed, s in study.items():
        assert s["photo_frames"] >= 0.70, (seed, s)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured on every seed (2371 training steps): only 20-31% of frame pairs "
                                       "move within 45° of the captioned pan, speed error 0.85-1.41 px/frame "
                                       "(docs/video_world.md, assets/results/video_world_claims.json)")
def test_samples_move_the_captioned_way(study):
    """The phase-correlation displacement moves within 45° of the captioned pan in ≥ 80% of frame
    pairs, at a speed within 1 px/frame of the captioned one. Does NOT hold on these weights (strict
    xfail: weights for which it holds make it fail; update it then)."""
    for seed, s in study.items():
        assert s["direction_rate"] >= 0.80, (seed, s)
        assert s["speed_error"] <= 1.0, (seed, s)


@pytest.mark.slow
def test_captions_without_motion_words_move_less(study):
    """The same photographs with their plain captions, on the same noise, move less."""
    for seed, s in study.items():
        assert s["plain_mean_speed"] < s["mean_speed"], (seed, s)


def test_docs_python_block_runs():
    """docs/video_world.md's Python example, as written (one clip, 20 steps: ~10 s)."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (code,) = re.findall(r"```python\n(.*?)```", (root / "docs" / "video_world.md").read_text(), re.S)
    proc = subprocess.run([sys.executable, "-"], input=code, cwd=root, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch.Size([1, 3, 8, 32, 32])" in proc.stdout
