"""`scripts/benchmark.py gp_noise` (scripts/bench/gp_noise.py) at the --quick size: the JSON fields the
issue names, every round kept, the variants alternating, and the noise it times being the noise."""
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"


def load_script():
    spec = importlib.util.spec_from_file_location("benchmark_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gp_noise_benchmark_quick(tmp_path):
    rc = load_script().main(["gp_noise", "--quick", "--frames", "1", "--size", "16", "--features", "200",
                             "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "gp_noise.json").read_text())
    for k in ("grid", "warped"):
        assert data[k]["ms_per_frame"] > 0 and data[k]["ratio"] > 0
        assert data[k]["met"] == (data[k]["ratio"] <= data[k]["target"])
    assert data["floor_ms_per_frame"] > 0
    assert data["config"]["point_feature_pairs"] == 1 * 4 * 16 * 16 * 200
    assert len(data["rounds"]) == 3 and [r["order"][0] for r in data["rounds"]] == ["floor", "grid", "warped"]
    # the timed functions are GP noise: unit variance, and the two forms agree on the grid
    assert 0.5 < data["check"]["grid_std"] < 1.5 and 0.5 < data["check"]["warped_std"] < 1.5
    assert data["check"]["grid_vs_direct_max_abs"] < 1e-4
    assert "| warped points (direct form) |" in (tmp_path / "gp_noise.md").read_text()
