"""The committed conditional worlds (`tiny-world-inpaint`, `tiny-world-sr`): one loader, their cards, and
restore() from the preset (docs/gp.md)."""
import json

import pytest
import torch

from modules.gp_finetune import load_finetuned, restore
from modules.models.spec import load_model, resolve_model_path

PRESETS = {"tiny-world-inpaint": ("inpainting", 7), "tiny-world-sr": ("super_resolution", 6)}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_conditional_world_preset_loads_and_restores(preset):
    task, channels = PRESETS[preset]
    path = resolve_model_path(preset)
    assert sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) <= 10 * 2**20
    assert json.loads((path / "unet" / "config.json").read_text())["in_channels"] == channels
    spec, card = load_finetuned(preset)
    assert spec.family == "sd" and spec.pixel_space and spec.unet.config.in_channels == channels
    assert spec.unet.dtype == torch.float32  # fp16 on disk, fp32 loaded
    assert card["task"] == task and card["noise"] == "gp" and card["preset"] == preset
    for field in ("gp_features", "gp_lengthscale", "gp_truncation", "training_steps", "final_loss", "training_time_s"):
        assert field in card, field
    readme = (path / "README.md").read_text()
    assert f"task: {task}" in readme and "training time" in readme and "final loss" in readme
    # load_model alone gives the same network (the preset is an ordinary pipeline folder)
    assert load_model(preset).unet.config.in_channels == channels

    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    if task == "inpainting":
        mask = torch.zeros(2, 1, 32, 32)
        mask[:, :, 8:20, 10:24] = 1
        out = restore(spec, task, ["a photo of a cat", ""], pixels=img, mask=mask, num_inference_steps=2)
    else:
        low = torch.nn.functional.avg_pool2d(img, card["scale"])
        out = restore(spec, task, ["a photo of a cat", ""], low_res=low, scale=card["scale"], num_inference_steps=2)
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
    # same seed -> same restoration
    again = (restore(spec, task, ["a photo of a cat", ""], pixels=img, mask=mask, num_inference_steps=2)
             if task == "inpainting" else
             restore(spec, task, ["a photo of a cat", ""], low_res=low, scale=card["scale"], num_inference_steps=2))
    assert torch.equal(out, again)


def test_an_export_folder_is_not_a_conditional_world(tmp_path):
    with pytest.raises(FileNotFoundError, match="export.json"):
        load_finetuned(str(resolve_model_path("tiny-world")))
