"""The unet3d family's UNet class: upstream's UNet3DConditionModel + peft adapter mixin + gradient
checkpointing (modules/models/unet3d_model.py)."""
import json

import diffusers
import pytest
import torch
from peft import LoraConfig

from modules.models.spec import load_model


@pytest.fixture(scope="module")
def spec():
    return load_model("tiny-unet3d")


def test_upstream_class_lacks_what_the_family_class_adds(spec):
    assert not hasattr(diffusers.UNet3DConditionModel, "load_lora_adapter")
    with pytest.raises(ValueError, match="does not support gradient checkpointing"):
        diffusers.UNet3DConditionModel(**{**spec.unet.config}).enable_gradient_checkpointing()
    assert isinstance(spec.unet, diffusers.UNet3DConditionModel) and hasattr(spec.unet, "load_lora_adapter")


def test_gradient_checkpointing_gives_the_same_output_and_gradients(spec, tmp_path):
    unet = type(spec.unet).from_pretrained(spec.path + "/unet").train()
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_v"], lora_dropout=0.1), adapter_name="a")
    x, t, e = torch.randn(1, 4, 4, 8, 8), torch.tensor([500]), torch.randn(1, 77, 32)

    def run():
        unet.zero_grad()
        torch.manual_seed(0)  # LoRA dropout: the recomputation must replay the same mask
        out = unet(x, t, encoder_hidden_states=e).sample
        out.square().mean().backward()
        return out.detach(), {n: p.grad.clone() for n, p in unet.named_parameters() if p.grad is not None}

    out0, g0 = run()
    unet.enable_gradient_checkpointing()
    assert unet.is_gradient_checkpointing
    out1, g1 = run()
    assert torch.equal(out0, out1) and g0.keys() == g1.keys() and len(g0) > 0
    assert all(torch.allclose(g0[k], g1[k], atol=1e-6) for k in g0)
    unet.disable_gradient_checkpointing()
    assert not unet.is_gradient_checkpointing and "forward" not in unet.down_blocks[0].__dict__
    unet.save_config(tmp_path)  # stock diffusers and the family detector still read it
    assert json.loads((tmp_path / "config.json").read_text())["_class_name"] == "UNet3DConditionModel"
