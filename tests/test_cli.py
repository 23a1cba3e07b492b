"""The training CLI end to end on the tiny recipes, every recipe parsed, DDP and precisions."""
import json
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


def run_cli(args, cwd, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "train", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


FAST = ["--trainer.max_steps", "4", "--data.init_args.steps_per_epoch", "4", "--model.init_args.edit.num_inference_steps", "4"]


def test_tiny_save_recipe_end_to_end(tmp_path):
    root = tmp_path / "run"
    out = run_cli(["fit", "-c", str(ROOT / "configs/save/tiny.yaml"), *FAST, "--trainer.default_root_dir", str(root),
                   "--trainer.logger.init_args.save_dir", str(root)], tmp_path)
    assert "[checkpoint]" in out and "[export]" in out
    cfg = (root / "config.yaml").read_text()
    assert "seed_everything: 0" in cfg and "adapter: spectral" in cfg
    ckpts = list((root / "checkpoints").glob("*.ckpt"))
    assert ckpts
    state = torch.load(ckpts[0], weights_only=False)["state_dict"]
    assert state and all(k.endswith(".delta") or ".temporal." in k for k in state)
    export = root / "export"
    assert (export / "spectral_shifts.safetensors").stat().st_size < 20_000  # 14 δ vectors (≈3 KB) + metadata header
    assert json.loads((export / "export.json").read_text())["method"] == "save"
    videos = {p.name for p in (root / "videos").glob("*.mp4")}
    assert "step000004_side_by_side.mp4" in videos and "step000004_edit_a_photo_of_a_cat.mp4" in videos
    from data.video_io import read_video

    sbs = read_video(root / "videos" / "step000004_side_by_side.mp4")
    assert sbs.shape[0] == 8 and sbs.shape[2] >= 3 * 32  # source | reconstruction | edit
    runs = list((root / "wandb").glob("offline-run-*/run-*.wandb"))
    assert runs and runs[0].stat().st_size > 0
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
