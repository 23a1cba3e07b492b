"""The GP fine-tuning recipes: the tiny-world ones end to end through `python -m train fit` (a few
steps: checkpoint of the UNet only, diffusers export that reloads, restoration images logged to W&B);
the SDXL ones instantiated on tiny-sdxl with their own settings (bf16-mixed, gradient checkpointing,
bf16 frozen parts) for one training step and one validation batch."""
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from diffusers import UNet2DConditionModel
from test_cli import recipe_parser, run_cli, wandb_history

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--trainer.max_steps", "2", "--data.init_args.steps_per_epoch", "2", "--data.init_args.batch_size", "2",
        "--data.init_args.val_items", "1", "--model.init_args.restore.num_inference_steps", "2"]


@pytest.mark.parametrize("recipe,channels", [("sr_world", 6), ("inpaint_world", 7)])
def test_tiny_world_recipes_run_end_to_end(recipe, channels, tmp_path):
    root = tmp_path / "run"
    out = run_cli(["fit", "-c", str(ROOT / f"configs/gp/{recipe}.yaml"), *FAST, "--trainer.log_every_n_steps", "1",
                   "--trainer.default_root_dir", str(root)], tmp_path)
    assert "[export]" in out and "[images]" in out
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    unet = UNet2DConditionModel.from_pretrained(root / "export", subfolder="unet")
    assert set(ckpt["state_dict"]) == {f"unet.{n}" for n, _ in unet.named_parameters()}
    assert unet.config.in_channels == channels
    for k, v in ckpt["state_dict"].items():  # the export is the checkpointed (trained) UNet
        assert torch.equal(unet.state_dict()[k[len("unet."):]], v), k
    meta = json.loads((root / "export" / "export.json").read_text())
    assert meta["noise"] == "gp" and meta["task"] == ("super_resolution" if recipe == "sr_world" else "inpainting")
    assert meta["training_steps"] == 2 and meta["gp_lengthscale_at_training_size"].startswith("0.0198944 (R = 32)")
    # the card's final loss (mean of the last <= 50 steps) and training time; the clock travels in the checkpoint
    assert meta["final_loss_steps"] == 2 and meta["final_loss"] > 0 and meta["training_time_s"] > 0
    assert 0 < ckpt["wall_time"] <= meta["training_time_s"] + 0.05  # the card rounds to 0.1 s
    assert (root / "images" / "step000002_restoration.png").stat().st_size > 1000
    rows = wandb_history(next((root / "wandb").glob("offline-run-*/run-*.wandb")))
    assert any(isinstance(r.get("images/restoration"), dict) for r in rows)
    assert any("val/psnr" in r and "val/psnr_baseline" in r for r in rows)


@pytest.mark.parametrize("recipe", ["sr_sdxl", "inpaint_sdxl_white"])
def test_sdxl_recipes_train_on_tiny_sdxl_with_their_settings(recipe, tmp_path):
    parser = recipe_parser()
    cfg = parser.parse_path(str(ROOT / f"configs/gp/{recipe}.yaml"))
    cfg.model.init_args.model = "tiny-sdxl"
    for k, v in {"source": None, "size": 32, "resize": 40, "batch_size": 2, "val_items": 1, "num_workers": 0,
                 "steps_per_epoch": 1}.items():
        cfg.data.init_args[k] = v
    cfg.model.init_args.restore.num_inference_steps = 2
    init = parser.instantiate_classes(cfg)
    module, dm = init.model, init.data
    assert module.hparams.gradient_checkpointing and module.unet.is_gradient_checkpointing
    assert module.vae.dtype == torch.bfloat16 and module.unet.dtype == torch.float32
    assert module.noise_kind == ("white" if recipe.endswith("_white") else "gp")
    assert cfg.trainer.precision == "bf16-mixed"
    trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", max_steps=1, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path), num_sanity_val_steps=0)
    before = module.unet.conv_in.weight.detach().clone()
    trainer.fit(module, datamodule=dm)
    assert not torch.equal(before, module.unet.conv_in.weight)  # one AdamW step moved the weights
    res = module.last_restoration
    assert res is not None and res["restored"].shape == (1, 3, 32, 32) and torch.isfinite(res["psnr"]).all()
