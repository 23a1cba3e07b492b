"""scripts/edit.py: bad input is refused before any model is loaded or any video edited, with a message
naming the flag/file and the fix; the outputs keep the input's frame rate; metrics.json is strict JSON."""
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "data/samples/pan_astronaut.mp4"


def load_script():
    spec = importlib.util.spec_from_file_location("vidtune_edit_script", ROOT / "scripts/edit.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class ExpensiveWork(Exception):
    pass


@pytest.fixture
def no_work(monkeypatch):
    """Loading a model or editing raises: a refusal must come before either."""
    import modules.adapters.export as export
    import modules.editing as editing
    import modules.models as models

    def boom(*a, **k):
        raise ExpensiveWork("expensive work started before the bad input was refused")

    monkeypatch.setattr(models, "load_parts", boom)
    monkeypatch.setattr(export, "load_adapted_model", boom)
    monkeypatch.setattr(editing, "edit_clip", boom)


@pytest.fixture
def stop_at_edit(monkeypatch):
    """Runs everything up to the edit, records what edit_clip got, and stops there."""
    import modules.editing as editing

    seen = {}

    def record(*args, **kwargs):  # signature-agnostic: finds the model, its frame attention and the prompt
        def attr(v, name):  # a property may refuse (e.g. a spec whose unet is wrapped outside it)
            try:
                return getattr(v, name, None)
            except Exception:
                return None

        values = [*args, *kwargs.values()]
        values += [x for v in list(values) for a in ("model", "unet", "denoiser") if (x := attr(v, a)) is not None]
        seen["model_id"] = next(v.model_id for v in values if hasattr(v, "model_id"))
        seen["frame_attention"] = next(v.frame_attention for v in values if hasattr(v, "frame_attention"))
        seen["prompt"] = next(v for v in values if isinstance(v, str))
        raise ExpensiveWork("stopped at the edit")

    monkeypatch.setattr(editing, "edit_clip", record)
    return seen


def refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        load_script().main(argv)
    assert exc.value.code not in (0, None)
    err = capsys.readouterr().err + (exc.value.code if isinstance(exc.value.code, str) else "")
    return err


BASE = ["--video", str(ASTRONAUT), "--prompt", "a photo of an astronaut", "--model", "tiny-sd"]


@pytest.mark.parametrize("steps", ["0", "-3"])
def test_non_positive_steps_refused_before_work(steps, no_work, capsys, tmp_path):
    err = refused([*BASE, "--steps", steps, "--out", str(tmp_path / "o")], capsys)
    assert "--steps" in err and ">= 1" in err
    assert not (tmp_path / "o").exists()


def test_more_steps_than_training_timesteps_refused_before_work(no_work, capsys, tmp_path):
    err = refused([*BASE, "--steps", "1001", "--out", str(tmp_path / "o")], capsys)
    assert "--steps 1001" in err and "1000" in err  # names the scheduler's num_train_timesteps
    assert not (tmp_path / "o").exists()


def test_other_bad_numbers_refused(no_work, capsys, tmp_path):
    for flag, value in [("--num-frames", "0"), ("--stride", "0"), ("--stem-bases", "0"), ("--chunk-frames", "0")]:
        err = refused([*BASE, flag, value, "--out", str(tmp_path / "o")], capsys)
        assert flag in err and ">= 1" in err


def make_export(tmp_path, model="tiny-world", frame_attention="first"):
    from modules.save import SAVEModule

    return SAVEModule(model=model, frame_attention=frame_attention).export(tmp_path / "export")


def test_base_model_defaults_to_the_exports(tmp_path, stop_at_edit, capsys):
    export = make_export(tmp_path, "tiny-world")
    with pytest.raises(ExpensiveWork):  # before: tiny-sd was loaded and the export refused as another base
        load_script().main(["--video", str(ASTRONAUT), "--prompt", "a photo of an astronaut", "--export", str(export),
                            "--steps", "2", "--out", str(tmp_path / "o")])
    assert stop_at_edit["model_id"] == "tiny-world"
    assert "tiny-world" in capsys.readouterr().out


def test_unknown_base_model_of_export_asks_for_model(tmp_path, no_work, capsys):
    export = make_export(tmp_path, "tiny-world")
    meta = json.loads((export / "export.json").read_text())
    meta["base_model"] = "models/nowhere-v9"
    (export / "export.json").write_text(json.dumps(meta))
    err = refused(["--video", str(ASTRONAUT), "--prompt", "a", "--export", str(export)], capsys)
    assert "models/nowhere-v9" in err and "--model" in err


def test_frame_attention_flag_is_honoured_with_an_export(tmp_path, stop_at_edit, capsys):
    export = make_export(tmp_path, "tiny-world", frame_attention="first")
    args = ["--video", str(ASTRONAUT), "--prompt", "a photo of an astronaut", "--export", str(export), "--steps", "2",
            "--out", str(tmp_path / "o")]
    with pytest.raises(ExpensiveWork):
        load_script().main(args)
    assert stop_at_edit["frame_attention"] == "first"  # the export's own setting by default
    with pytest.raises(ExpensiveWork):
        load_script().main([*args, "--frame-attention", "sparse_causal"])
    assert stop_at_edit["frame_attention"] == "sparse_causal"  # before: silently the export's "first"
    assert "sparse_causal" in capsys.readouterr().out


def test_broken_export_json_is_named(tmp_path, no_work, capsys):
    export = make_export(tmp_path)
    (export / "export.json").write_text('{"format": "vidtune-export/1", "files": ')
    err = refused([*BASE[:4], "--export", str(export)], capsys)
    assert str(export / "export.json") in err and "export.py" in err


def test_truncated_safetensors_is_named(tmp_path, no_work, capsys):
    export = make_export(tmp_path)
    f = export / "temporal_attention.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    err = refused([*BASE[:4], "--export", str(export)], capsys)
    assert str(f) in err and "truncated or corrupt" in err


def test_missing_export_folder_is_named(tmp_path, no_work, capsys):
    err = refused([*BASE[:4], "--export", str(tmp_path / "nothing")], capsys)
    assert str(tmp_path / "nothing") in err


def test_bad_metadata_beside_the_video_is_ignored_when_the_prompt_is_given(tmp_path, stop_at_edit):
    import shutil

    video = tmp_path / "clip.mp4"
    shutil.copy(ASTRONAUT, video)
    (tmp_path / "metadata.jsonl").write_text('{"video": "clip.mp4", "prompt": \n')  # broken JSON
    with pytest.warns(UserWarning, match="metadata.jsonl"), pytest.raises(ExpensiveWork):
        load_script().main(["--video", str(video), "--prompt", "a photo of an astronaut", "--model", "tiny-sd",
                            "--steps", "2", "--out", str(tmp_path / "o")])
    assert stop_at_edit["prompt"] == "a photo of an astronaut"


def strict_json(path: Path):
    def bad(name):
        raise AssertionError(f"{path} holds {name}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=bad)


def test_metrics_json_never_holds_infinity_or_nan(tmp_path):
    script = load_script()
    report = {"ddim": {"recon_psnr_per_frame": [float("inf"), 31.5], "edits": {"x": {"warping_error": float("nan")}},
                       "n": np.float32(2.5)}}
    script.write_metrics(tmp_path / "metrics.json", report)
    got = strict_json(tmp_path / "metrics.json")
    assert got["ddim"]["recon_psnr_per_frame"] == [None, 31.5]
    assert got["ddim"]["edits"]["x"]["warping_error"] is None and got["ddim"]["n"] == 2.5
    assert any("recon_psnr_per_frame" in n and "inf" in n for n in got["ddim"]["notes"])
    assert any("warping_error" in n and "nan" in n for n in got["ddim"]["notes"])


def test_output_fps_follows_the_input(tmp_path):
    script = load_script()
    from data.video_io import read_video, write_video

    clip = tmp_path / "clip30.mp4"
    write_video(clip, read_video(ASTRONAUT), fps=30)
    assert script.output_fps(clip, 1) == pytest.approx(30)
    assert script.output_fps(clip, 2) == pytest.approx(15)  # every 2nd frame: same duration, same speed


def test_output_fps_without_a_stated_rate_falls_back(monkeypatch, capsys):
    from data import video_io

    monkeypatch.setattr(video_io, "video_fps", lambda path: 0.0)
    assert load_script().output_fps(ASTRONAUT, 1) == 8.0
    assert "no frame rate" in capsys.readouterr().err


def test_one_frame_and_30fps_end_to_end(tmp_path):
    """A 30 fps input comes out at 30 fps; --num-frames 1 edits a single frame (warping error null, with why)."""
    from data.video_io import read_video, video_fps, write_video

    clip = tmp_path / "clip30.mp4"
    write_video(clip, read_video(ASTRONAUT), fps=30)
    out = tmp_path / "o"
    load_script().main(["--video", str(clip), "--prompt", "a photo of an astronaut", "--edit", "a photo of a cat",
                        "--model", "tiny-sd", "--steps", "2", "--num-frames", "1", "--out", str(out)])
    report = strict_json(out / "metrics.json")
    entry = report["ddim"]
    assert len(entry["recon_psnr_per_frame"]) == 1
    assert entry["edits"]["a photo of a cat"]["warping_error"] is None and "2 frames" in " ".join(entry["notes"])
    assert entry["fps"] == pytest.approx(30)
    for name in ("ddim_side_by_side.mp4", "ddim_edit_a_photo_of_a_cat.mp4"):
        assert video_fps(out / name) == pytest.approx(30, abs=0.01)
    assert math.isfinite(entry["recon_psnr_mean"])
