"""The training CLI end to end on the tiny recipes, every recipe parsed, DDP and precisions."""
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.cli import LightningArgumentParser

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def recipe_parser():
    parser = LightningArgumentParser()
    parser.add_lightning_class_args(L.Trainer, "trainer")
    parser.add_lightning_class_args(L.LightningModule, "model", subclass_mode=True)
    parser.add_lightning_class_args(L.LightningDataModule, "data", subclass_mode=True)
    parser.add_argument("--seed_everything", type=int | bool, default=True)
    return parser


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT / "configs")) for p in CONFIGS])
def test_every_recipe_parses(path):
    cfg = recipe_parser().parse_path(str(path))
    assert cfg.model.class_path.startswith("modules.")
    assert cfg.trainer.default_root_dir


SWITCH_TYPOS = [  # (recipe, option, misspelt value, the allowed values)
    ("save/tiny.yaml", "model.init_args.adapter", "lorra", ["spectral", "full_query", "lora"]),
    ("save/tiny.yaml", "model.init_args.temporal", "spectrl", ["full", "spectral", "frozen"]),
    ("tav/tiny.yaml", "model.init_args.frame_attention", "sparse", ["per_frame", "first", "sparse_causal", "full"]),
    ("save/sd15.yaml", "model.init_args.base_dtype", "bf16", ["float32", "bfloat16", "float16"]),
    ("stem/tiny.yaml", "model.init_args.frame_attention", "causal", ["per_frame", "first", "sparse_causal", "full"]),
    ("world/tiny.yaml", "model.init_args.save_dtype", "half", ["float16", "bfloat16", "float32"]),
]


@pytest.mark.parametrize("recipe,option,typo,allowed", SWITCH_TYPOS, ids=[f"{r}:{o.split('.')[-1]}" for r, o, *_ in SWITCH_TYPOS])
def test_a_misspelt_switch_is_refused_at_parse_time(recipe, option, typo, allowed):
    """String switches are `Literal[...]`: jsonargparse refuses a typo in a recipe override before
    anything is built, naming the option and the allowed values (the right value still parses)."""
    from jsonargparse import ActionConfigFile

    parser = recipe_parser()
    parser.add_argument("-c", "--config", action=ActionConfigFile)
    parser.exit_on_error = False
    with pytest.raises(Exception) as err:
        parser.parse_args(["-c", str(ROOT / "configs" / recipe), f"--{option}", typo])
    msg = str(err.value)
    assert option.split(".")[-1] in msg and typo in msg and all(repr(v) in msg for v in allowed), msg
    cfg = parser.parse_args(["-c", str(ROOT / "configs" / recipe), f"--{option}", allowed[-1]])
    assert cfg.model.init_args[option.split(".")[-1]] == allowed[-1]


def cli(args, cwd, timeout=600, **env):
    return subprocess.run([sys.executable, "-m", "train", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def run_cli(args, cwd, timeout=600):
    proc = cli(args, cwd, timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def wandb_history(run_file: Path) -> list[dict]:
    """The history rows of an offline W&B run (`run-*.wandb`: LevelDB-log records of protobufs)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, rows, pos, buf = run_file.read_bytes(), [], 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block trailer
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            if rec.WhichOneof("record_type") == "history":
                row = {}
                for item in rec.history.item:
                    *path, last = [item.key] if item.key else list(item.nested_key)
                    node = row
                    for part in path:  # media are stored field by field: ("video/x", "_type"), ...
                        node = node.setdefault(part, {})
                    node[last] = json.loads(item.value_json)
                rows.append(row)
    return rows


TINY = str(ROOT / "configs/save/tiny.yaml")
CSV = ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", "."]  # "." = run folder
FAST = ["--trainer.max_steps", "4", "--data.init_args.steps_per_epoch", "4", "--model.init_args.edit.num_inference_steps", "4"]


def test_tiny_save_recipe_end_to_end(tmp_path):
    root = tmp_path / "run"
    # 6 steps with 4 steps per epoch (max_steps decides, the last step is validated), W&B logging every
    # step (its own step counter runs ahead of the trainer's), the logger's folder from default_root_dir
    out = run_cli(["fit", "-c", TINY, "--trainer.max_steps", "6", "--data.init_args.steps_per_epoch", "4",
                   "--model.init_args.edit.num_inference_steps", "4", "--trainer.log_every_n_steps", "1",
                   "--trainer.default_root_dir", str(root)], tmp_path)
    assert "[checkpoint]" in out and "[export]" in out
    assert "H.264 yuv420p" in out  # the codec of the logged videos is said
    cfg = (root / "config.yaml").read_text()
    assert "seed_everything: 0" in cfg and "adapter: spectral" in cfg
    ckpts = list((root / "checkpoints").glob("*.ckpt"))
    assert [p.name for p in ckpts] == ["last.ckpt"]
    ckpt = torch.load(ckpts[0], weights_only=True)
    assert ckpt["global_step"] == 6
    state = ckpt["state_dict"]
    assert state and all(k.endswith(".delta") or ".temporal." in k for k in state)
    export = root / "export"
    assert (export / "spectral_shifts.safetensors").stat().st_size < 20_000  # 14 δ vectors (≈3 KB) + metadata header
    assert json.loads((export / "export.json").read_text())["method"] == "save"
    videos = {p.name for p in (root / "videos").glob("*.mp4")}
    assert "step000004_side_by_side.mp4" in videos and "step000006_edit_a_photo_of_a_cat.mp4" in videos
    from data.video_io import read_video

    sbs = read_video(root / "videos" / "step000006_side_by_side.mp4")
    assert sbs.shape[0] == 8 and sbs.shape[2] >= 3 * 32  # source | reconstruction | edit
    runs = list((root / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and not (tmp_path / "runs").exists()
    rows = wandb_history(runs[0])
    logged = {(r["trainer/global_step"], k) for r in rows for k, v in r.items() if isinstance(v, dict)
              and v.get("_type") in ("video-file", "image-file")}
    for step in (4, 6):
        assert {(step, "video/side_by_side"), (step, "video/edit_a_photo_of_a_cat")} <= logged, sorted(logged)
    assert (6, "plots/spectral_shift_per_layer") in logged
    assert any("train/loss" in r for r in rows)
    media = list((root / "wandb").glob("offline-run-*/files/media/videos/**/*.mp4"))
    assert len(media) >= 3
    assert (root / "plots" / "spectral_shift_per_layer.png").stat().st_size > 5000

    # scripts/export.py reproduces the callback's export from the checkpoint
    ck = root / "checkpoints" / "last.ckpt"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/export.py"), str(ck), "--out", str(tmp_path / "re")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from safetensors.torch import load_file

    a = load_file(export / "spectral_shifts.safetensors")
    b = load_file(tmp_path / "re" / "spectral_shifts.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_edit_script_on_a_video_file_with_stem(tmp_path):
    out = tmp_path / "edit"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/edit.py"), "--video", str(ROOT / "data/samples/zoom_coffee_12f.mp4"),
         "--prompt", "a photo of a cup of coffee", "--edit", "a photo of a rocket", "--num-frames", "6",
         "--height", "24", "--width", "40", "--steps", "4", "--inversion", "ddim", "stem", "--stem-bases", "32",
         "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    assert set(report) == {"ddim", "stem"}
    assert len(report["stem"]["recon_psnr_per_frame"]) == 6
    assert report["stem"]["edits"]["a photo of a rocket"]["warping_error"] >= 0
    assert (out / "stem_side_by_side.mp4").exists() and (out / "reconstruction_error.png").stat().st_size > 5000


def test_ddp_two_processes_end_identical(tmp_path):
    root = tmp_path / "ddp"
    run_cli(["fit", "-c", str(ROOT / "configs/save/tiny.yaml"), *FAST, "--trainer.default_root_dir", str(root),
             "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
             "--trainer.logger.save_dir", str(root),
             "--trainer.limit_val_batches", "0", "--trainer.log_every_n_steps", "1",
             "--trainer.callbacks+=modules.callbacks.consistency.DDPConsistencyCheck"], tmp_path)
    report = json.loads((root / "ddp_consistency.json").read_text())
    assert report["world_size"] == 2
    a, b = report["stats"]
    assert a == b and a[2] > 0
    metrics = list(root.glob("**/metrics.csv"))  # CSV logger: the no-W&B fallback
    assert metrics and "train/loss" in metrics[0].read_text().splitlines()[0]


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_precisions_train(tmp_path, sample_clip, precision):
    from tests.test_save import ClipRepeat, LossRecorder
    from torch.utils.data import DataLoader

    from modules.save import SAVEModule

    rec = LossRecorder()
    module = SAVEModule(lr_delta=1e-2)
    L.Trainer(accelerator="cpu", max_steps=2, precision=precision, logger=False, enable_progress_bar=False,
              default_root_dir=str(tmp_path), callbacks=[rec], enable_checkpointing=False,
              limit_val_batches=0).fit(module, DataLoader(ClipRepeat(sample_clip, 2)))
    assert len(rec.losses) == 2 and all(0 < x < 10 for x in rec.losses)
    assert all(p.dtype == torch.float32 for p in module.parameters() if p.requires_grad)


def cli_in_process(args, capsys) -> tuple[int, list[str]]:
    """`python -m train ...` in this process (for runs that stop before training): exit code, stderr lines."""
    from train.cli import main

    with pytest.raises(SystemExit) as stop:
        main(args)
    return stop.value.code, capsys.readouterr().err.strip().splitlines()


def test_sigterm_then_resume_with_a_new_learning_rate(tmp_path, capsys, monkeypatch):
    root = tmp_path / "run"
    ck = root / "checkpoints" / "last.ckpt"
    base = ["fit", "-c", TINY, *FAST, "--trainer.default_root_dir", str(root), "--trainer.limit_val_batches", "0",
            *CSV]
    # SIGTERM after step 2: a checkpoint, a notice saying how to resume, a non-zero exit, no export
    p = cli([*base, "--trainer.callbacks+=tests.test_cli_units.SigtermAt", "--trainer.callbacks.step", "2"], tmp_path)
    assert p.returncode == 143, p.stderr[-3000:]
    assert "INCOMPLETE" in p.stderr and f"--ckpt_path {ck}" in p.stderr
    assert torch.load(ck, weights_only=True)["global_step"] == 2 and not (root / "export").exists()
    half = ck.parent / ".last.ckpt.x7fq2a"  # what a save killed mid-write leaves
    half.write_bytes(b"half")

    # a new run into that folder, and a resume that changes the adapter, are refused before any work
    monkeypatch.chdir(tmp_path)
    code, lines = cli_in_process(base, capsys)
    assert code == 2 and lines[-1].startswith("error:") and "--overwrite" in lines[-1] and "--ckpt_path" in lines[-1]
    code, lines = cli_in_process([*base, "--ckpt_path", str(ck), "--model.init_args.adapter", "lora"], capsys)
    assert code == 2 and "model.init_args.adapter='spectral'" in lines[-1] and "'lora'" in lines[-1]

    # resuming with a new learning rate: it is what the optimizer uses and what config.yaml says
    out = run_cli([*base, "--ckpt_path", str(ck), "--model.init_args.lr_delta", "0.05"], tmp_path)
    assert "lr_delta" in out and not half.exists()
    assert sorted(p.name for p in ck.parent.iterdir()) == ["last.ckpt"]
    ckpt = torch.load(ck, weights_only=True)
    assert ckpt["global_step"] == 4
    lrs = {g["name"]: g["lr"] for g in ckpt["optimizer_states"][0]["param_groups"]}
    assert lrs == {"delta": 0.05, "temporal": 3e-5}
    assert "lr_delta: 0.05" in (root / "config.yaml").read_text()
    assert (root / "export" / "export.json").exists() and list(root.glob("*/version_*/metrics.csv"))


def test_cli_errors_end_with_the_cause_and_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a folder with the recipe's prompt: fails while building the datamodule
    args = ["fit", "-c", TINY, "--data.init_args.video", "samples", "--trainer.default_root_dir", str(tmp_path / "a")]
    code, lines = cli_in_process(args, capsys)
    assert code == 2 and lines[-1].startswith("error: ") and "--data.init_args.prompt null" in lines[-1]
    assert not any("Traceback" in line for line in lines) and len(lines) < 20, lines
    # a misspelt option: the cause in one line, not the whole usage
    code, lines = cli_in_process(["fit", "-c", TINY, "--model.init_args.adaptr", "lora"], capsys)
    assert code == 2 and "Option 'adaptr' is not accepted" in lines[-1] and "--help" in lines[-1] and len(lines) < 5
    monkeypatch.setenv("VIDTUNE_DEBUG", "1")  # the whole traceback
    with pytest.raises(ValueError, match="Does not validate"):
        __import__("train.cli").cli.main(args)
    monkeypatch.delenv("VIDTUNE_DEBUG")

    # a frame size tiny-sd's VAE cannot take: refused at setup, before training
    root = tmp_path / "b"
    code, lines = cli_in_process(["fit", "-c", TINY, *FAST, "--model.init_args.model", "tiny-sd",
                                  "--data.init_args.height", "31", "--trainer.default_root_dir", str(root), *CSV],
                                 capsys)
    assert code == 2 and "height 31 is not a multiple of 2" in lines[-1] and "30 or 32" in lines[-1], lines
    assert not (root / "checkpoints").exists() and not (root / "videos").exists()
