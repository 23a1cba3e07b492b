"""The probes of scripts/video_world_diagnostics.py (docs/video_world.md, "Why the captioned motion
is not followed") on real models: the frame-symmetry probe reads exactly zero on a world whose
temporal layers are still the identity, and the caption-gap probe sees a caption that matters."""
import importlib.util
from pathlib import Path

import torch

from modules.video_world import VideoWorldModule

spec_ = importlib.util.spec_from_file_location(
    "video_world_diagnostics", Path(__file__).resolve().parents[1] / "scripts" / "video_world_diagnostics.py")
diag = importlib.util.module_from_spec(spec_)
spec_.loader.exec_module(diag)


def test_frame_symmetry_is_zero_for_identity_temporal_layers_and_not_for_the_trained_world():
    from modules.models.spec import load_model

    fresh = VideoWorldModule(init_from="tiny-world", ema_decay=0.0).spec  # step 0: the image world frame by frame
    fresh.unet.eval()
    r0 = diag.frame_symmetry(fresh, seeds=(0,), timesteps=(950,))
    assert r0["t950"]["mean"] < 1e-4
    trained = load_model("tiny-video-world")
    r1 = diag.frame_symmetry(trained, seeds=(0,), timesteps=(950,))
    per = r1["t950"]["per_frame"]
    assert r1["t950"]["mean"] > 1e-3
    assert max(per[0], per[-1]) > min(per[1:-1])  # the padded end frames are the ones told apart


def test_caption_gap_sees_a_caption_that_matters():
    """Swapping the caption's photograph (not its direction) must raise the ε error of the trained
    world clearly: the probe's sign convention and arithmetic on a caption the world does use."""
    from data.motion_clips import Motion, motion_caption
    from modules.models.spec import load_model

    spec = load_model("tiny-video-world")
    spec.unet.eval()
    acp = spec.scheduler.alphas_cumprod
    m = Motion("pan", "left", 2)
    clip = diag.centred_pan("chelsea", m).expand(2, -1, -1, -1, -1)
    g = torch.Generator().manual_seed(0)
    eps = diag.mix_frames(torch.randn((1, *clip.shape[1:]), generator=g)).expand(2, -1, -1, -1, -1)
    cond = spec.encode_prompt([motion_caption("chelsea", m), motion_caption("rocket", m)])
    for t in (850, 950):
        xt = acp[t].sqrt() * clip + (1 - acp[t]).sqrt() * eps
        with torch.no_grad():
            o = spec(xt, t, cond)
        e = (o - eps).pow(2).flatten(1).mean(1)
        assert e[1] > 1.3 * e[0]
    assert diag.opposite("up left") == "down right"


def test_position_gradient_probe_reports_both_channel_groups_and_leaves_the_world_as_it_was():
    import pytest

    from modules.video_world import VideoUNetConfig

    small = VideoUNetConfig(block_out_channels=(8, 16, 16), attention_head_dim=2, norm_num_groups=8, frame_position=True)
    spec = VideoWorldModule(unet=small, init_from=None, ema_decay=0.0, seed=1).spec
    spec.unet.requires_grad_(False)
    with torch.no_grad():
        spec.unet.conv_in.weight[:, 3].normal_(0, 0.1)
    r = diag.position_gradient(spec, batches=4, batch_size=2)
    assert r["noise_level"] == 0.5 and r["tied"]
    for k in ("position", "time_embedding_common", "time_embedding_per_frame", "rgb"):
        assert 0 < r[k]["mean_over_per_batch"] <= 1 and 0 <= r[k]["share_beyond_3se"] <= 1
    assert not any(p.requires_grad for p in spec.unet.parameters())
    assert all(p.grad is None for p in spec.unet.parameters())
    assert not any(m._forward_pre_hooks for m in spec.unet.modules())  # the probe's hooks are gone
    plain = VideoWorldModule(unet=VideoUNetConfig(block_out_channels=(8, 16, 16), attention_head_dim=2, norm_num_groups=8),
                             init_from=None, ema_decay=0.0).spec
    with pytest.raises(ValueError, match="frame-position"):
        diag.position_gradient(plain, batches=1)
