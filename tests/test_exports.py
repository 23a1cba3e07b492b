"""The export registry: diffusers-lora read by the real StableDiffusionPipeline.load_lora_weights,
diffusers-model read by UNet2DConditionModel.from_pretrained (LoRA fused; the naive save loses it),
named-tensors round trip, and refusals of another base, rank or shape."""
import json

import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from peft import LoraConfig, inject_adapter_in_model

from modules.adapters.diffusers_lora import LoraMismatchError, load_diffusers_lora
from modules.adapters.formats import (ExportFormatError, folder_size, load_named_tensors, write_export)
from modules.models.spec import load_model, resolve_model_path
from modules.training import TrainingModule


def unet_inputs(spec, frames=2):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(frames, 4, 16, 16, generator=g)
    t = torch.tensor([700] * frames)
    emb = spec.encode_prompt(["a photo of a cat"])["encoder_hidden_states"].expand(frames, -1, -1)
    return x, t, emb


def test_save_lora_export_loads_in_stable_diffusion_pipeline(tmp_path):
    from modules.save import SAVEModule

    module = SAVEModule(model="tiny-sd", adapter="lora", temporal="frozen", lora_rank=4)
    assert module.export_formats() == ["vidtune", "diffusers-lora"]
    with torch.no_grad():  # a "trained" LoRA: B away from its zero init
        for n, p in module.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(hash(n) % 1000))
    out = write_export(module, tmp_path / "lora", "diffusers-lora", step=7)
    meta = json.loads((out / "export.json").read_text())
    assert meta["rank"] == 4 and meta["step"] == 7 and meta["base_checksum"] == module.base_checksum
    assert (out / "pytorch_lora_weights.safetensors").is_file()

    # the trained model, per frame (temporal attention frozen = zero-initialised = no-op)
    module.video_unet.set_frame_attention("per_frame")
    spec = module.spec
    x, t, emb = unet_inputs(spec)
    with torch.no_grad():
        want = module.video_unet(x.unsqueeze(0).transpose(1, 2), t[:1], emb[:1]).transpose(1, 2)[0]
        pipe = StableDiffusionPipeline.from_pretrained(str(resolve_model_path("tiny-sd")), safety_checker=None)
        base = pipe.unet(x, t, encoder_hidden_states=emb).sample
        pipe.load_lora_weights(str(out))
        got = pipe.unet(x, t, encoder_hidden_states=emb).sample
    assert (base - want).abs().max() > 1e-3  # the LoRA matters
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())


def test_diffusers_lora_refuses_other_base_or_rank(tmp_path):
    from modules.save import SAVEModule

    module = SAVEModule(model="tiny-sd", adapter="lora", temporal="frozen", lora_rank=4)
    out = write_export(module, tmp_path / "lora", "diffusers-lora")
    fresh = load_model("tiny-sd")
    with pytest.raises(LoraMismatchError, match="rank 4, but rank 8"):
        load_diffusers_lora(fresh.unet, out, rank=8)
    with pytest.raises(LoraMismatchError, match="trained on base 'tiny-sd'.*checksum"):
        load_diffusers_lora(fresh.unet, out, checksum="another-base")
    (out / "pytorch_lora_weights.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(LoraMismatchError, match="pytorch_lora_weights.safetensors: not a readable"):
        load_diffusers_lora(fresh.unet, out)


class LoraTuned(TrainingModule):
    """A LoRA-tuned UNet of the sd family (what an SDXL-GP-style method exports as a whole model)."""

    def __init__(self, fmt):
        super().__init__()
        self.spec = load_model("tiny-sd")
        self.base_checksum = self.spec.checksum()
        self.unet = self.spec.unet
        self.fmt = fmt
        inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_v"]), self.unet)
        with torch.no_grad():
            for n, p in self.unet.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.3)
                p.requires_grad_("lora_" in n)

    def export_formats(self):
        return [self.fmt]


def test_diffusers_model_export_fuses_lora_and_reloads_exactly(tmp_path):
    torch.manual_seed(0)
    module = LoraTuned("diffusers-model")
    x, t, emb = unet_inputs(module.spec)
    with torch.no_grad():
        want = module.unet(x, t, encoder_hidden_states=emb).sample
    out = module.export(tmp_path / "model")
    with torch.no_grad():
        assert torch.equal(module.unet(x, t, encoder_hidden_states=emb).sample, want)  # un-merged again
    loaded = UNet2DConditionModel.from_pretrained(out, subfolder="unet")
    with torch.no_grad():
        got = loaded(x, t, encoder_hidden_states=emb).sample
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())
    assert json.loads((out / "export.json").read_text())["subfolder"] == "unet"
    assert folder_size(out) > (out / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size  # subfolders counted

    # the hazard this format avoids: save_pretrained with peft layers injected writes
    # base_layer/lora keys, which from_pretrained does not load (those weights come back re-initialised)
    module.unet.save_pretrained(tmp_path / "naive")
    naive = UNet2DConditionModel.from_pretrained(tmp_path / "naive")
    with torch.no_grad():
        bad = naive(x, t, encoder_hidden_states=emb).sample
    assert not torch.allclose(bad, want, atol=1e-3)  # random (or uninitialised: NaN) weights


def test_named_tensors_round_trip_and_refusals(tmp_path):
    torch.manual_seed(0)
    module = LoraTuned("named-tensors")
    out = module.export(tmp_path / "named")
    meta = json.loads((out / "export.json").read_text())
    assert meta["names"] and all("lora_" in n for n in meta["names"])
    other = LoraTuned("named-tensors")  # same base, other LoRA values
    with torch.no_grad():
        for n, p in other.unet.named_parameters():
            if "lora_" in n:
                p.zero_()
    load_named_tensors(other.unet, out, checksum=other.base_checksum)
    a, b = dict(module.unet.named_parameters()), dict(other.unet.named_parameters())
    assert all(torch.equal(a[n], b[n]) for n in meta["names"])
    with pytest.raises(ExportFormatError, match="checksum"):
        load_named_tensors(other.unet, out, checksum="0000")
    plain = load_model("tiny-sd").unet  # no LoRA layers: the names are not in the model
    with pytest.raises(ExportFormatError, match="tensors do not match the model"):
        load_named_tensors(plain, out)
