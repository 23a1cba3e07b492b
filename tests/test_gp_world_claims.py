"""Claims on the committed conditional worlds (`tiny-world-inpaint`, `tiny-world-sr`; docs/gp.md, numbers in
assets/results/gp_world_claims.json), on held-out crops over three seeds (`scripts/gp_world_results.py`:
the photographs resized to 48 instead of the training 40, seed-specific crops and masks; DDIM 20 steps
from GP noise; PSNR of the restored region — the mask, or the whole image for ×4 SR).

Slow: the three GP tests took 8 min together at load average 5–9 on the 2 cores (one study of 3 seeds ×
4 groups); the white comparison runs its own study of four worlds (7.8 min at load average 3; passed):

    OMP_NUM_THREADS=1 python -m pytest -m slow tests/test_gp_world_claims.py

What held on every seed is asserted. The issue's claim — the restored region beats the trivial baseline
(bicubic; the mask filled with the mean colour) by ≥ 3 dB — did NOT hold on any seed: it is an
`xfail(strict=True)` with the measured numbers, so that weights for which it holds make it fail
(update it then). The GP-vs-white comparison needs the white-noise twins, which are not committed
(`python -m train fit -c configs/gp/{inpaint,sr}_world_white.yaml` writes runs/gp-*-world-white/export);
it is skipped without them.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from gp_world_results import MASK_KINDS, study, summarise  # noqa: E402

pytestmark = pytest.mark.slow

SEEDS, ITEMS, STEPS = (0, 1, 2), 16, 20
SR_OTHER_DB = 3.0
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
    region) — for every mask kind (measured minima over the seeds 0.8–1.9 dB in the committed JSON, whose
    samples are drawn in a batch of 4 per crop, so not these draws) and by ≥ SR_OTHER_DB for ×4 SR."""
    _, summary = gp_study
    for kind in MASK_KINDS:
        assert summary[f"inpainting/{kind}"]["gp_minus_other_image_min"] > 0.0, kind
    assert summary["super_resolution"]["gp_minus_other_image_min"] >= SR_OTHER_DB


@pytest.mark.xfail(strict=True, reason="measured on every seed: the single-sample restorations are 4-9 dB BELOW "
                                       "the trivial baselines (docs/gp.md, assets/results/gp_world_claims.json)")
def test_restored_region_beats_the_trivial_baseline_by_3db(gp_study):
    _, summary = gp_study
    for g in groups(summary):
        assert summary[g]["gp_minus_baseline_min"] >= 3.0, (g, summary[g])


def test_gp_and_white_noise_fine_tuning_are_comparable():
    """GP- vs white-noise fine-tuning (the same recipe) on the same held-out crops: within 2 dB of each
    other on every seed and group — small beside their 4–9 dB gap to the baselines (committed JSON:
    GP − white from −0.7 to +1.5 dB; paper: FID 37.5 vs 40.8 for SR)."""
    missing = [v for v in WHITE.values() if not (REPO / v).is_dir()]
    if missing:
        pytest.skip(f"white-noise twins not trained here ({', '.join(missing)}); see the module docstring")
    res, _ = study({"inpaint_gp": "tiny-world-inpaint", "sr_gp": "tiny-world-sr",
                    **{k: str(REPO / v) for k, v in WHITE.items()}}, SEEDS, ITEMS, STEPS, verbose=False)
    summary = summarise(res)
    for g in groups(summary):
        assert -2.0 <= summary[g]["gp_minus_white_min"] and summary[g]["gp_minus_white_max"] <= 2.0, (g, summary[g])
