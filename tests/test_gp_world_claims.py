"""Claims on the committed conditional worlds (`tiny-world-inpaint`, `tiny-world-sr`; docs/gp.md, numbers in
assets/results/gp_world_claims.json), on held-out crops over three seeds (`scripts/gp_world_results.py`:
the photographs resized to 48 instead of the training 40, seed-specific crops and masks; DDIM 20 steps
from GP noise; PSNR of the restored region — the mask, or the whole image for ×4 SR).

Slow: one study of 3 seeds × 4 groups for the GP tests (≈ 6.5 min at 1 thread on the shared CPU; with
these weights: 2 passed, the ≥ 3 dB claim xfailed as expected), another of four worlds for the white
comparison (with these weights and the white twins in runs/: 1 passed, 1 xfailed as expected, in 7.9 min
at 2 threads beside another job):

    OMP_NUM_THREADS=1 python -m pytest -m slow tests/test_gp_world_claims.py

Weights: the 1100-step truncated-SNR recipes (configs/gp/*_world.yaml). What held on every seed is
asserted. The issue's claim — the restored region beats the trivial baseline (bicubic; the mask filled
with the mean colour) by ≥ 3 dB — did NOT hold on any seed: a strict `xfail` with the measured numbers,
so that weights for which it holds make it fail (update it then). The white-noise twins are not
committed (`python -m train fit -c configs/gp/{inpaint,sr}_world_white.yaml` writes
runs/gp-*-world-white/export); the GP-vs-white tests are skipped without them.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from gp_world_results import MASK_KINDS, study, summarise  # noqa: E402

pytestmark = pytest.mark.slow

SEEDS, ITEMS, STEPS = (0, 1, 2), 16, 20
OTHER_DB, SR_OTHER_DB = 3.0, 5.0
WHITE = {"inpaint_white": "runs/gp-inpaint-world-white/export", "sr_white": "runs/gp-sr-world-white/export"}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gp_study():
    res, _ = study({"inpaint_gp": "tiny-world-inpaint", "sr_gp": "tiny-world-sr"}, SEEDS, ITEMS, STEPS, verbose=False)
    return res, summarise(res)


def groups(summary):
    return [f"inpainting/{k}" for k in MASK_KINDS] + ["super_resolution"]


def test_every_seed_and_group_is_measured(gp_study):
    res, summary = gp_study
    assert set(summary) == set(groups(summary))
    for g in groups(summary):
        assert summary[g]["seeds"] == list(SEEDS)


def test_restorations_follow_their_own_input(gp_study):
    """Held on every seed: a restoration is closer to its own ground truth than to another crop's (same
    region) — by ≥ OTHER_DB for every mask kind and for ×4 SR (measured minima over the seeds 5.2–6.0 dB
    for inpainting, 9.2 dB for SR in the committed JSON, whose samples are drawn in a batch of 4 per crop,
    so not these draws)."""
    _, summary = gp_study
    for kind in MASK_KINDS:
        assert summary[f"inpainting/{kind}"]["gp_minus_other_image_min"] >= OTHER_DB, kind
    assert summary["super_resolution"]["gp_minus_other_image_min"] >= SR_OTHER_DB


@pytest.mark.xfail(strict=True, reason="measured on every seed (committed JSON, single samples): GP − baseline "
                                       "−0.95 to +0.23 dB (inpainting, rectangle), −1.44 to −0.16 (brush), −0.94 to "
                                       "+0.18 (outpaint), −3.19 to −2.66 (×4 SR); the 600-step plain-ε worlds were "
                                       "3.6–8.7 dB below (docs/gp.md, assets/results/gp_world_claims.json)")
def test_restored_region_beats_the_trivial_baseline_by_3db(gp_study):
    _, summary = gp_study
    for g in groups(summary):
        assert summary[g]["gp_minus_baseline_min"] >= 3.0, (g, summary[g])


@pytest.fixture(scope="module")
def white_study():
    missing = [v for v in WHITE.values() if not (REPO / v).is_dir()]
    if missing:
        pytest.skip(f"white-noise twins not trained here ({', '.join(missing)}); see the module docstring")
    res, _ = study({"inpaint_gp": "tiny-world-inpaint", "sr_gp": "tiny-world-sr",
                    **{k: str(REPO / v) for k, v in WHITE.items()}}, SEEDS, ITEMS, STEPS, verbose=False)
    return summarise(res)


def test_gp_noise_fine_tuning_is_not_worse_than_white(white_study):
    """GP- vs white-noise fine-tuning (the same recipe) on the same held-out crops: GP ahead on every seed
    and group (committed JSON: GP − white +1.0 to +4.1 dB; paper: FID 37.5 vs 40.8 for SR, GP better)."""
    for g in groups(white_study):
        assert white_study[g]["gp_minus_white_min"] > 0.0, (g, white_study[g])


@pytest.mark.xfail(strict=True, reason="GP − white per seed (committed JSON): +2.0 to +4.1 dB (rectangle), +1.6 to "
                                       "+3.3 (brush), +1.0 to +3.9 (outpaint), +3.0 to +4.1 (×4 SR): the white twins "
                                       "trail by more than 2 dB (the 600-step worlds were within −0.7 to +1.8)")
def test_gp_and_white_noise_fine_tuning_are_within_2db(white_study):
    for g in groups(white_study):
        assert -2.0 <= white_study[g]["gp_minus_white_min"] and white_study[g]["gp_minus_white_max"] <= 2.0, \
            (g, white_study[g])
