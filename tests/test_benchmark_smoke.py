"""The benchmark code path (scripts/benchmark.py -> scripts/bench/save.py, stem.py) on the tiny preset."""
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # the harness package `bench`

from bench import stem as stem_bench  # noqa: E402
from bench.save import VARIANTS, BenchConfig, run_save_benchmark  # noqa: E402

FIELDS = ("trainable_params", "query_trainable_params", "optimizer_state_bytes", "step_time_s", "peak_rss_bytes",
          "export_bytes")


def load_script():
    path = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"
    spec = importlib.util.spec_from_file_location("benchmark_script", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def check_result(out: Path) -> dict:
    data = json.loads((out / "save.json").read_text())
    for v in VARIANTS:
        for f in FIELDS:
            assert f in data["variants"][v], (v, f)
        assert data["variants"][v]["step_time_s"] > 0 and data["variants"][v]["export_bytes"] > 0
    s, f, lo = (data["variants"][v] for v in ("spectral", "full_query", "lora"))
    assert s["query_trainable_params"] < lo["query_trainable_params"] < f["query_trainable_params"]
    # the temporal attention trains in every variant
    assert s["temporal_trainable_params"] == f["temporal_trainable_params"] > 0
    assert s["query_trainable_params"] == data["model"]["query_spectral_params"]
    assert f["query_trainable_params"] == data["model"]["query_weight_params"]
    assert set(data["targets"]) == {"query_params_ratio", "export_bytes", "step_time_ratio", "peak_rss"}
    assert "| spectral |" in (out / "save.md").read_text()
    return data


def test_save_benchmark_smoke_tiny(tmp_path):
    rc = load_script().main(["save", "--out", str(tmp_path), "--model", "tiny-sd", "--frames", "2", "--size", "8",
                             "--rounds", "2", "--in-process"])
    assert rc == 0
    data = check_result(tmp_path)
    assert len(data["rounds"]) == 2 and data["rounds"][1]["order"][0] == "full_query"  # order rotates


@pytest.mark.slow
def test_save_benchmark_isolated_workers_tiny(tmp_path):
    """The subprocess-per-variant path used for the real run (peak RSS per variant)."""
    run_save_benchmark(BenchConfig(model="tiny-sd", frames=2, size=8, rounds=1), tmp_path)
    data = check_result(tmp_path)
    assert all(data["variants"][v]["peak_rss_isolated"] for v in VARIANTS)


def test_stem_dispatch_writes_results(tmp_path, monkeypatch):
    """`benchmark.py stem` drives scripts/bench/stem.py (shrunk to one tiny grid here) and writes its files."""
    layer = stem_bench.bench_layer
    monkeypatch.setattr(stem_bench, "bench_layer", lambda out, **kw: layer(
        out, **{**kw, "token_grid": ((2, 4, 4),), "modes": ("per_frame", "all_frame"), "repeats": 1}))
    rc = load_script().main(["stem", "--out", str(tmp_path), "--no-breakdown", "--repeats", "1"])
    assert rc == 0
    data = json.loads((tmp_path / "stem.json").read_text())
    assert set(data["layer"]["32"]) == {"per_frame", "all_frame"}
    assert (tmp_path / "stem.md").exists()


@pytest.mark.slow
def test_sma_benchmark_smoke(tmp_path):
    """`scripts/benchmark.py sma` end to end at the smallest size (one frame count, one round, worker
    processes running real Trainer.fit): the JSON has the issue's fields for both hosts (~2 min)."""
    import json
    import subprocess
    import sys

    out = tmp_path / "bench"
    cmd = [sys.executable, "scripts/benchmark.py", "sma", "--out", str(out), "--frames", "8", "--size", "16",
           "--rounds", "1", "--warmup", "0", "--checkpointing-frames", "8", "--threads", "1", "--rank", "4"]
    subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parents[1], env={**os.environ, "OMP_NUM_THREADS": "1"})
    res = json.loads((out / "sma.json").read_text())
    for host in ("vmc", "motiondirector"):
        h = res["hosts"][host]
        for key in ("step_time_s_sma", "step_time_s_base", "ratio", "peak_mem_sma", "peak_mem_base"):
            assert h[key] > 0, (host, key)
        assert h["gradient_checkpointing"]["peak_mem_with"] > 0
        assert len(res["variants"][f"{host}-sma-8f"]["steps"]) == 1
    assert (out / "sma.md").read_text().startswith("# SMA benchmark")
