import copy

import pytest
import torch

from modules.callbacks.stem import STEMAttnProcessor, STEMInversion
from modules.editing import EditConfig, edit_clip
from modules.models import VideoUNet
from modules.models.video_unet import FrameAttnProcessor


def test_stem_composes_with_a_save_tuned_model(tmp_path, sample_clip):
    from modules.adapters.export import load_adapted_model
    from modules.save import SAVEModule

    module = SAVEModule()
    with torch.no_grad():
        for n, p in module.named_parameters():
            if n.endswith(".delta"):
                p.normal_(0, 0.05)
    module.export(tmp_path / "export")
    parts, vunet = load_adapted_model("tiny-sd", tmp_path / "export")
    cfg = EditConfig(edit_prompts=["a photo of a cat"], num_inference_steps=6)
    ddim = edit_clip(parts, vunet, sample_clip, "a photo of an astronaut", cfg, [], progress=False)
    stem_cb = STEMInversion(num_bases=64)
    seen = []

    class Spy(STEMInversion):
        pass

    orig = STEMAttnProcessor.__call__

    def spy(self, *a, **k):
        seen.append(self.ctx.num_frames)
        return orig(self, *a, **k)

    STEMAttnProcessor.__call__ = spy
    try:
        stem = edit_clip(parts, vunet, sample_clip, "a photo of an astronaut", cfg, [stem_cb], progress=False)
    finally:
        STEMAttnProcessor.__call__ = orig
    # STEM ran inside the spectral-shifted model on all 8 frames, and the processors were restored
    assert seen and set(seen) == {8}
    assert all(isinstance(a.processor, FrameAttnProcessor) for _, a in vunet.self_attentions())
    assert not torch.allclose(stem.inversion.z, ddim.inversion.z)
    assert torch.isfinite(stem.reconstruction).all() and stem.edits["a photo of a cat"].shape == sample_clip.shape
    assert len(stem.inversion.trajectory) == 7


def test_feature_injection_keeps_edit_closer_to_source(tiny_parts, sample_clip):
    vunet = VideoUNet(copy.deepcopy(tiny_parts.unet), "first")
    cfg = EditConfig(edit_prompts=["a photo of a cat"], num_inference_steps=8, reconstruct=False)
    plain = edit_clip(tiny_parts, vunet, sample_clip, "a photo of an astronaut", cfg, [STEMInversion(num_bases=32)],
                      progress=False)
    pnp = edit_clip(tiny_parts, vunet, sample_clip, "a photo of an astronaut", cfg,
                    [STEMInversion(num_bases=32, feature_injection=True)], progress=False)
    a = plain.edits["a photo of a cat"]
    b = pnp.edits["a photo of a cat"]
    assert not torch.allclose(a, b)
    assert ((b - sample_clip) ** 2).mean() < ((a - sample_clip) ** 2).mean()
    assert all(isinstance(at.processor, FrameAttnProcessor) and type(at.processor) is FrameAttnProcessor
               for _, at in vunet.self_attentions())


def test_bad_stem_settings(tiny_parts, sample_clip):
    with pytest.raises(ValueError, match="tau must be > 0"):
        STEMInversion(tau=0)
    vunet = VideoUNet(copy.deepcopy(tiny_parts.unet), "first")
    cfg = EditConfig(num_inference_steps=2, reconstruct=False)
    with pytest.raises(MemoryError, match="chunk_frames"):
        edit_clip(tiny_parts, vunet, sample_clip, "a photo", cfg, [STEMInversion(max_attention_gib=4e-3)],
                  progress=False)
    # chunking makes the same clip fit
    res = edit_clip(tiny_parts, vunet, sample_clip, "a photo", cfg,
                    [STEMInversion(num_bases=16, chunk_frames=2, max_attention_gib=4e-3)], progress=False)
    assert torch.isfinite(res.inversion.z).all()
