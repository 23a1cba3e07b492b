"""SAVE and STEM claims measured on the tiny world (`assets/world/`); numbers and protocol in
docs/world.md ("SAVE and STEM on the world"), produced by `scripts/method_claims.py`.

Only what held on *every* seed is asserted:
- STEM inversion (K 64/256, tau 0.01, 5 EM iterations) reconstructs the pans at least as well as
  DDIM inversion on average over the pans, for every STEM seed, K, and 20/50 steps; per pan it is
  never more than 0.5 dB worse (it *is* slightly worse on chelsea), so "≥ DDIM on every pan" is
  not asserted.
- SAVE tuning (60 steps) does **not** consistently bring the edit closer to the source motion
  (mean warping error −0.3% on seed 0, −9% on seed 2, +27% on seed 1; tracking 0 before and
  after; 80 steps with temporal lr 1e-2 is worse on every seed), so that is not asserted; what holds on every seed is that the tuned model reconstructs the clip better.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from modules.models.tiny import world_path

try:
    world_path()
    HAVE_WORLD = True
except FileNotFoundError:
    HAVE_WORLD = False

pytestmark = pytest.mark.skipif(not HAVE_WORLD, reason="assets/world not trained (configs/world/tiny.yaml)")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


@pytest.fixture(scope="module")
def world():
    from modules.models import load_parts

    return load_parts("tiny-world")


def test_stem_reconstructs_rocket_pan_better_than_ddim(world):
    """20 steps, rocket pan: STEM (K 64, seed 0) mean PSNR ≥ DDIM (`first`) + 0.5 dB and every frame
    ≥ 30 dB (measured: 35.7 vs 33.4 dB; STEM seeds 0–2: 34.2–35.7 dB)."""
    from method_claims import reconstruction_psnr

    from modules.models.video_unet import VideoUNet

    vu = VideoUNet(world.unet, "first", temporal=False)
    ddim = reconstruction_psnr(world, vu, "rocket", 20)
    stem = reconstruction_psnr(world, vu, "rocket", 20, {"num_bases": 64, "tau": 0.01, "iters": 5, "seed": 0})
    assert np.mean(stem) >= np.mean(ddim) + 0.5, (stem, ddim)
    assert min(stem) >= 30.0, stem


@pytest.mark.slow
def test_stem_reconstruction_at_least_ddim_over_pans():
    """4 pans × {20, 50} steps × K {64, 256} × STEM seeds {0, 1, 2} vs DDIM `first` / `per_frame`."""
    from method_claims import stem_study

    res = stem_study()
    rows = res["rows"]

    def mean_over_pans(steps, method, seed=None):
        return float(np.mean([r["mean"] for r in rows
                              if r["steps"] == steps and r["method"] == method and r["seed"] == seed]))

    for n in res["steps"]:
        ddim = max(mean_over_pans(n, "ddim/first"), mean_over_pans(n, "ddim/per_frame"))
        for k in res["bases"]:
            for s in res["seeds"]:
                assert mean_over_pans(n, f"stem/K{k}", s) >= ddim, (n, k, s)
        for pan in res["pans"]:
            best_ddim = max(r["mean"] for r in rows if r["steps"] == n and r["pan"] == pan and r["seed"] is None)
            for r in rows:
                if r["steps"] == n and r["pan"] == pan and r["seed"] is not None:
                    assert r["mean"] >= best_ddim - 0.5, (n, pan, r["method"], r["seed"], r["mean"], best_ddim)
                    assert r["min"] >= 30.0, (n, pan, r["method"], r["seed"], r["min"])


@pytest.mark.slow
def test_save_tuning_on_the_world(tmp_path):
    """4 sources of edit_pairs(0), SAVE 60 steps (lr δ 1e-2, temporal full lr 1e-3), seeds 0, 1, 2."""
    from method_claims import save_study

    res = save_study(sources=4, seeds=(0, 1, 2), steps=60, lr_delta=1e-2, lr_temporal=1e-3, root=str(tmp_path))
    base = res["summary"]["untuned"]
    for s in res["seeds"]:
        tuned = res["summary"][f"save/seed{s}"]
        # tuning fits the clip: the reconstruction improves on every seed (measured +0.6 to +1.0 dB)
        assert tuned["recon_psnr_min"] > base["recon_psnr_min"] + 0.3, (s, tuned, base)
        # and does not destroy editability (measured 90.6–96.9% vs untuned 93.8%)
        assert tuned["target_frames"] >= 0.85, (s, tuned)
    assert all(r["max_abs_delta"] > 0 for r in res["rows"] if r["model"] == "save")
