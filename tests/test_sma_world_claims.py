"""SMA's claim on the tiny video world (issue 11): tuned on a reference pan the world was never
captioned with ((−2, −1) px/frame), the tuned model samples other photographs moving like the
reference; the paper says SMA lowers the displacement error of VMC and MotionDirector.

Protocol and the measured table: scripts/sma_world_study.py, docs/sma.md,
assets/results/sma_world_claims.json. Run: `OMP_NUM_THREADS=1 python -m pytest -q -m slow
tests/test_sma_world_claims.py` (the study: ~25 min on one core).

What was measured (3 seeds, 120 iterations; mean end-point error in px/frame against a reference
speed of 2.24): untuned 2.61, VMC 2.74, VMC + SMA 2.60, MotionDirector 2.77, MotionDirector + SMA
2.65. SMA lowered MotionDirector's error on every seed (by 0.10-0.16) and VMC's on two of three (seed 1:
2.55 vs 2.47). No tuned model moved its samples clearly closer to the reference than the untuned world
did: the errors stay about the size of the motion itself, i.e. the motion did not transfer at this
budget. Asserted: what held on every seed (MotionDirector); VMC's is a strict xfail.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


@pytest.mark.slow
def test_study_script_runs_end_to_end(tmp_path):
    """Two iterations per host on tiny-unet3d, one seed, one photograph: the JSON has every method's row."""
    out = tmp_path / "sma.json"
    cmd = [sys.executable, "scripts/sma_world_study.py", "--model", "tiny-unet3d", "--seeds", "0", "--steps", "2",
           "--per-seed", "1", "--methods", "untuned,vmc+sma,motiondirector", "--out", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    res = json.loads(out.read_text())
    assert {r["method"] for r in res["rows"]} == {"untuned", "vmc+sma", "motiondirector"}
    assert all(r["epe"] >= 0 for r in res["rows"])


@pytest.mark.slow
def test_sma_lowers_motiondirectors_displacement_error_on_every_seed():
    """MotionDirector + SMA vs MotionDirector, same seeds and noise (~17 min)."""
    from sma_world_study import study

    res = study(methods=("motiondirector", "motiondirector+sma"), steps=120, log=lambda *a: None)["summary"]
    for seed in res["motiondirector"]:
        assert res["motiondirector+sma"][seed]["epe"] < res["motiondirector"][seed]["epe"], seed


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured: VMC + SMA had the higher error on seed 1 (2.548 vs 2.474 px/frame) "
                                       "(docs/sma.md, assets/results/sma_world_claims.json)")
def test_sma_lowers_vmcs_displacement_error_on_every_seed():
    from sma_world_study import study

    res = study(methods=("vmc", "vmc+sma"), steps=120, log=lambda *a: None)["summary"]
    for seed in res["vmc"]:
        assert res["vmc+sma"][seed]["epe"] < res["vmc"][seed]["epe"], seed
