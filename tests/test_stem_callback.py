import copy

import pytest
import torch

from modules.callbacks.stem import PnPFrameAttnProcessor, STEMAttnProcessor, STEMInversion
from modules.editing import EditConfig, edit_clip
from modules.models import VideoUNet
from modules.models.video_unet import FrameAttnProcessor
from modules.sampling import SamplingCallback


class Net:
    """A denoiser `(z, t, cond)` running a given VideoUNet (exposed as `.model`, as a ModelSpec does)."""

    def __init__(self, vunet):
        self.model = vunet

    def __call__(self, z, t, cond):
        return self.model(z, t, cond["encoder_hidden_states"])


class Probe(SamplingCallback):
    """Records, per sampling label, the attn1 processors in use at every step (runs after STEM's hooks)."""

    def __init__(self):
        self.seen = {}

    def before_step(self, state):
        label = state.extras.get("label", state.phase)
        procs = self.seen.setdefault(label, set())
        for name, attn in state.model.self_attentions():
            p = attn.processor
            procs.add((name.startswith("up_blocks"), type(p).__name__, getattr(p, "pnp", None) is not None))


def edit(spec, vunet, clip, prompt, cfg, callbacks):
    return edit_clip(spec, clip, prompt, cfg, callbacks, progress=False, denoiser=Net(vunet))


def test_stem_composes_with_a_save_tuned_model(tmp_path, sample_clip):
    from modules.adapters.export import load_adapted_model
    from modules.save import SAVEModule

    module = SAVEModule()
    with torch.no_grad():
        for n, p in module.named_parameters():
            if n.endswith(".delta"):
                p.normal_(0, 0.05)
    module.export(tmp_path / "export")
    parts = load_adapted_model("tiny-sd", tmp_path / "export")
    vunet = parts.model
    cfg = EditConfig(edit_prompts=["a photo of a cat"], num_inference_steps=3)
    ddim = edit(parts, vunet, sample_clip, "a photo of an astronaut", cfg, [])
    seen = []
    orig = STEMAttnProcessor.__call__

    def spy(self, *a, **k):
        seen.append(self.ctx.num_frames)
        return orig(self, *a, **k)

    STEMAttnProcessor.__call__ = spy
    try:
        stem = edit(parts, vunet, sample_clip, "a photo of an astronaut", cfg, [STEMInversion(num_bases=64)])
    finally:
        STEMAttnProcessor.__call__ = orig
    # STEM ran inside the spectral-shifted model on all 8 frames, and the processors were restored
    assert seen and set(seen) == {8}
    assert all(type(a.processor) is FrameAttnProcessor for _, a in vunet.self_attentions())
    assert not torch.allclose(stem.inversion.z, ddim.inversion.z)
    assert torch.isfinite(stem.reconstruction).all() and stem.edits["a photo of a cat"].shape == sample_clip.shape
    assert len(stem.inversion.trajectory) == 4


@pytest.mark.parametrize("injection", [False, True])
def test_edit_attention_switch_changes_the_edit_pass(tiny_parts, sample_clip, injection):
    """`edit_attention="stem"` samples the edit with STEM attention, `"model"` with the model's frame
    attention (PnP-wrapped on the decoder with feature injection); inversion is STEM either way."""
    vunet = VideoUNet(copy.deepcopy(tiny_parts.unet), "first", temporal=False)
    cfg = EditConfig(edit_prompts=["a photo of an astronaut"], num_inference_steps=3, guidance_scale=1.0)
    clip = sample_clip[:, :, :4]
    out, seen = {}, {}
    for mode in ("stem", "model"):
        probe = Probe()
        cb = STEMInversion(num_bases=16, edit_attention=mode, feature_injection=injection)
        out[mode] = edit(tiny_parts, vunet, clip, "a photo of an astronaut", cfg, [cb, probe])
        seen[mode] = probe.seen
        assert all(type(a.processor) is FrameAttnProcessor for _, a in vunet.self_attentions())  # restored
    for mode in ("stem", "model"):
        assert {t for _, t, _ in seen[mode]["invert"]} == {"STEMAttnProcessor"}
        assert {t for _, t, _ in seen[mode]["reconstruct"]} == {"STEMAttnProcessor"}
    if injection:  # decoder layers record/inject q, k; encoder layers do not
        assert seen["stem"]["edit"] == {(True, "STEMAttnProcessor", True), (False, "STEMAttnProcessor", False)}
        assert seen["model"]["edit"] == {(True, "PnPFrameAttnProcessor", True), (False, "FrameAttnProcessor", False)}
    else:
        assert {t for _, t, _ in seen["stem"]["edit"]} == {"STEMAttnProcessor"}
        assert {t for _, t, _ in seen["model"]["edit"]} == {"FrameAttnProcessor"}
        # with the source prompt at CFG 1 the STEM edit pass *is* the STEM reconstruction; the model's is not
        stem, model = out["stem"], out["model"]
        assert torch.equal(stem.edits["a photo of an astronaut"], stem.reconstruction)
        assert not torch.allclose(model.edits["a photo of an astronaut"], model.reconstruction, atol=1e-3)
        assert torch.equal(model.reconstruction, stem.reconstruction)


def test_edit_attention_is_checked():
    from jsonargparse import ArgumentParser

    with pytest.raises(ValueError, match="edit_attention must be one of"):
        STEMInversion(edit_attention="stm")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(STEMInversion, "stem")
    assert parser.parse_args(["--stem.edit_attention=model"]).stem.edit_attention == "model"
    with pytest.raises(Exception, match="edit_attention"):
        parser.parse_args(["--stem.edit_attention=stm"])


def test_feature_injection_keeps_edit_closer_to_source(tiny_parts, sample_clip):
    vunet = VideoUNet(copy.deepcopy(tiny_parts.unet), "first")
    cfg = EditConfig(edit_prompts=["a photo of a cat"], num_inference_steps=6, reconstruct=False)
    clip = sample_clip[:, :, :4]
    for mode in ("stem", "model"):
        plain = edit(tiny_parts, vunet, clip, "a photo of an astronaut", cfg,
                     [STEMInversion(num_bases=32, edit_attention=mode)])
        pnp = edit(tiny_parts, vunet, clip, "a photo of an astronaut", cfg,
                   [STEMInversion(num_bases=32, edit_attention=mode, feature_injection=True)])
        a = plain.edits["a photo of a cat"]
        b = pnp.edits["a photo of a cat"]
        assert not torch.allclose(a, b)
        assert ((b - clip) ** 2).mean() < ((a - clip) ** 2).mean(), mode
        assert all(type(at.processor) is FrameAttnProcessor for _, at in vunet.self_attentions())
    assert PnPFrameAttnProcessor is not None


def test_bad_stem_settings(tiny_parts, sample_clip):
    with pytest.raises(ValueError, match="tau must be > 0"):
        STEMInversion(tau=0)
    vunet = VideoUNet(copy.deepcopy(tiny_parts.unet), "first")
    cfg = EditConfig(num_inference_steps=2, reconstruct=False)
    with pytest.raises(MemoryError, match="chunk_frames"):
        edit(tiny_parts, vunet, sample_clip, "a photo", cfg, [STEMInversion(max_attention_gib=4e-3)])
    # chunking makes the same clip fit
    res = edit(tiny_parts, vunet, sample_clip, "a photo", cfg,
               [STEMInversion(num_bases=16, chunk_frames=2, max_attention_gib=4e-3)])
    assert torch.isfinite(res.inversion.z).all()
