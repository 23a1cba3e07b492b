"""The whole-UNet STEM step benchmark (scripts/bench/stem_unet.py) on the tiny preset: alternating
rounds, every round's figure kept, per-round ratios and their median; `benchmark.py stem --no-layer`
keeps the layer results already written."""
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # the harness package `bench`

from bench import stem_unet  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:STEM EM. num_bases")  # K > tokens at these tiny sizes


@pytest.fixture(scope="module")
def tiny_vunet():
    from modules.models import VideoUNet, load_parts

    return VideoUNet(load_parts("tiny-sd").unet, "per_frame", temporal=True).eval()


def test_unet_step_rounds_and_ratios(tiny_vunet, monkeypatch):
    calls = []
    set_mode = stem_unet.set_mode
    monkeypatch.setattr(stem_unet, "set_mode", lambda v, m: (calls.append(m), set_mode(v, m)))
    modes = ("per_frame", "all_frame", "stem256")
    out = stem_unet.bench_unet_step({}, frames=3, size=8, rounds=3, modes=modes, vunet=tiny_vunet)
    res = out["unet_step"]
    # warm-up round + 3 timed rounds; the order is reversed every other timed round
    assert calls == list(modes) + list(modes) + list(modes)[::-1] + list(modes)
    for m in modes:
        assert len(res[m]["runs"]) == 3 and res[m]["seconds"] == statistics.median(res[m]["runs"])
        assert len(res[m]["cpu_runs"]) == 3 and res[m]["cpu_seconds"] == statistics.median(res[m]["cpu_runs"])
        assert all(c > 0 for c in res[m]["cpu_runs"])
    r = res["_ratio_stem256_per_frame"]
    expected = [a / b for a, b in zip(res["stem256"]["runs"], res["per_frame"]["runs"])]
    assert r["rounds"] == pytest.approx(expected) and r["median"] == pytest.approx(statistics.median(expected))
    c = res["_cpu_ratio_stem256_per_frame"]
    assert c["rounds"] == pytest.approx([a / b for a, b in zip(res["stem256"]["cpu_runs"], res["per_frame"]["cpu_runs"])])
    assert res["_config"]["rounds"] == 3 and len(res["_config"]["load_average_1min"]) == 3
    table = stem_unet.format_unet_step(res)
    assert "| ratio stem256 / per_frame (wall) |" in table and "| ratio stem256 / per_frame (CPU) |" in table
    assert "round 3" in table
    with pytest.raises(ValueError, match="unknown modes"):
        stem_unet.bench_unet_step({}, modes=("per_frme",), vunet=tiny_vunet)


def test_benchmark_script_unet_step_only_keeps_layer_results(tmp_path, tiny_vunet, monkeypatch):
    path = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"
    spec = importlib.util.spec_from_file_location("benchmark_script_stem", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    layer = {"layer": {"32": {"per_frame": {"seconds": 0.5}, "all_frame": {"seconds": 1.0}}}, "config": {"x": 1}}
    (tmp_path / "stem.json").write_text(json.dumps(layer))
    bench = stem_unet.bench_unet_step
    monkeypatch.setattr(stem_unet, "bench_unet_step",
                        lambda out, **kw: bench(out, **{**kw, "frames": 2, "size": 8, "vunet": tiny_vunet}))
    monkeypatch.setattr(stem_unet, "build_video_unet", lambda *a, **k: pytest.fail("must not build SD 1.5"))
    rc = script.main(["stem", "--out", str(tmp_path), "--unet-step", "--no-layer", "--rounds", "3",
                      "--unet-modes", "per_frame,stem256"])
    assert rc == 0
    data = json.loads((tmp_path / "stem.json").read_text())
    assert data["layer"] == layer["layer"]  # kept from the previous run
    assert set(k for k in data["unet_step"] if not k.startswith("_")) == {"per_frame", "stem256"}
    assert len(data["unet_step"]["_ratio_stem256_per_frame"]["rounds"]) == 3
    assert "Whole SD 1.5 UNet inversion step" in (tmp_path / "stem.md").read_text()
    assert script.main(["stem", "--out", str(tmp_path), "--no-layer"]) == 2  # nothing to run
