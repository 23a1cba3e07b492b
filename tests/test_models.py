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


@pytest.mark.parametrize("mode", ["per_frame", "first", "sparse_causal", "full"])
def test_inflated_model_equals_image_model_at_init(tiny_parts, mode):
    torch.manual_seed(0)
    unet = copy.deepcopy(tiny_parts.unet)
    ref_unet = copy.deepcopy(tiny_parts.unet)
    video = VideoUNet(unet, mode, temporal=True)
    emb = torch.randn(2, 16, 32)
    if mode == "per_frame":
        z = torch.randn(2, 4, 3, 16, 16)  # any video: per-frame attention is the image model
    else:  # other frame sets see the same keys only when the frames agree
        z = torch.randn(2, 4, 1, 16, 16).expand(-1, -1, 3, -1, -1).contiguous()
    with torch.no_grad():
        out = video(z, 500, emb)
        ref = image_model_per_frame(ref_unet, z, 500, emb)
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()


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
