import copy

import pytest
import torch

from modules.models import ModelNotFoundError, VideoUNet, load_parts
from modules.models.video_unet import frame_kv_index


def image_model_per_frame(unet, z, t, emb):
    b, c, f, h, w = z.shape
    x = z.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    out = unet(x, torch.full((b * f,), t), encoder_hidden_states=emb.repeat_interleave(f, 0)).sample
    return out.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def test_tiny_preset_round_trips_through_loader(tiny_parts):
    assert (tiny_parts.unet.config.in_channels, tiny_parts.vae.config.latent_channels) == (4, 4)
    again = load_parts(tiny_parts.path)
    for (n, a), (_, b) in zip(tiny_parts.unet.state_dict().items(), again.unet.state_dict().items()):
        assert torch.equal(a, b), n
    emb = tiny_parts.encode_prompt(["a photo of a cat"])["encoder_hidden_states"]
    assert emb.shape == (1, 16, 32)


def test_missing_model_folder_says_what_to_download(tmp_path):
    with pytest.raises(ModelNotFoundError, match="huggingface-cli download"):
        load_parts(str(tmp_path / "nope"))
    (tmp_path / "half" / "unet").mkdir(parents=True)
    with pytest.raises(ModelNotFoundError, match="text_encoder/"):
        load_parts(str(tmp_path / "half"))


def test_frame_kv_index():
    assert frame_kv_index(4, "first") == [[0]] * 4
    assert frame_kv_index(4, "sparse_causal") == [[0, 0], [0, 0], [0, 1], [0, 2]]
    assert frame_kv_index(3, "full") == [[0, 1, 2]] * 3
    with pytest.raises(ValueError, match="frame_attention must be one of"):
        frame_kv_index(3, "diagonal")


# frame i's keys/values, by definition (module docstring of modules/models/video_unet.py), for 4 frames
FRAME_SETS = {
    "per_frame": [[0], [1], [2], [3]],
    "first": [[0], [0], [0], [0]],
    "sparse_causal": [[0], [0], [0, 1], [0, 2]],  # {0, i-1}
    "full": [[0, 1, 2, 3]] * 4,
}


class ByHandFrameSets:
    """Reference self-attention: each frame's queries attend to the tokens of its frame set, computed
    one frame at a time by diffusers' own processor with those frames' hidden states as the
    `encoder_hidden_states` (no gathering code of the video UNet involved)."""

    def __init__(self, sets):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.sets, self.plain = sets, AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        f = len(self.sets)
        outs = []
        for idx in range(hidden_states.shape[0]):
            b, i = divmod(idx, f)
            kv = torch.cat([hidden_states[b * f + j] for j in self.sets[i]])[None]
            outs.append(self.plain(attn, hidden_states[idx:idx + 1], encoder_hidden_states=kv))
        return torch.cat(outs)


@pytest.mark.parametrize("mode", ["per_frame", "first", "sparse_causal", "full"])
def test_inflated_model_follows_its_frame_sets_on_a_moving_video(tiny_parts, mode):
    """On distinct frames, the inflated UNet (temporal layers at their identity init) equals the image
    UNet whose every self-attention of frame i takes keys/values from frames S(i), computed by hand."""
    from diffusers.models.attention import BasicTransformerBlock

    torch.manual_seed(0)
    video = VideoUNet(copy.deepcopy(tiny_parts.unet), mode, temporal=True)
    ref_unet = copy.deepcopy(tiny_parts.unet)
    for block in ref_unet.modules():
        if isinstance(block, BasicTransformerBlock):
            block.attn1.set_processor(ByHandFrameSets(FRAME_SETS[mode]))
    z = torch.randn(2, 4, 4, 16, 16)  # every frame different
    emb = torch.randn(2, 16, 32)
    with torch.no_grad():
        out = video(z, 500, emb)
        ref = image_model_per_frame(ref_unet, z, 500, emb)
        plain = image_model_per_frame(tiny_parts.unet, z, 500, emb)  # per-frame image model
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()
    # frame 0 attends to itself in every mode but `full`; the others see other frames' keys
    moved = (out - plain).abs().amax(dim=(0, 1, 3, 4))
    expect_moved = [FRAME_SETS[mode][i] != [i] for i in range(4)]
    assert [bool(m > 1e-3) for m in moved] == expect_moved, (mode, moved)


def test_frame_attention_changes_output_on_moving_video(tiny_parts):
    video = VideoUNet(copy.deepcopy(tiny_parts.unet), "per_frame")
    z = torch.randn(1, 4, 3, 16, 16)
    emb = torch.randn(1, 16, 32)
    with torch.no_grad():
        a = video(z, 500, emb)
        video.set_frame_attention("first")
        b = video(z, 500, emb)
    assert torch.allclose(a[:, :, 0], b[:, :, 0], atol=1e-5)  # frame 0 attends to itself either way
    assert (a[:, :, 1:] - b[:, :, 1:]).abs().max() > 1e-3
