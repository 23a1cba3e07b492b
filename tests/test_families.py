"""Model families: every tiny preset through the one loader, codec, denoiser and its own scheduler;
family detection; the bad inputs each family refuses."""
import json
import shutil

import pytest
import torch

from modules.conditioning import Conditioning
from modules.models import (
    FAMILIES,
    PRESETS,
    ConditioningError,
    ModelFamilyError,
    ModelNotFoundError,
    VideoSizeError,
    VideoUNet,
    load_model,
)
from modules.models.spec import detect_family, resolve_model_path

FAMILY_OF = {"tiny-sd": "sd", "tiny-world": "sd", "tiny-sdxl": "sdxl", "tiny-unet3d": "unet3d",
             "tiny-cogvideox": "cogvideox"}
FRAMES = {"tiny-cogvideox": 9}  # its causal VAE round-trips 8k+1 frames
SCHEDULER_OF = {"tiny-sd": "DDIMScheduler", "tiny-world": "DDIMScheduler", "tiny-sdxl": "EulerDiscreteScheduler",
                "tiny-unet3d": "DDIMScheduler", "tiny-cogvideox": "CogVideoXDDIMScheduler"}


@pytest.fixture(scope="module")
def specs():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load_model(name)
        return cache[name]

    return get


def linked_copy(src, dst, skip=(), index=True):
    """A model folder whose parts are symlinks to `src`'s (cheap copies for bad-input tests)."""
    dst.mkdir()
    for p in src.iterdir():
        if p.name in skip or (p.name == "model_index.json" and not index):
            continue
        if p.is_dir():
            (dst / p.name).symlink_to(p, target_is_directory=True)
        elif p.name == "model_index.json":
            shutil.copy(p, dst / p.name)
    return dst


def test_presets_cover_every_family():
    from modules.models.tiny import CONDITIONAL_WORLDS  # restoration worlds (tests/test_gp_world_presets.py)

    trained = {"tiny-video-world"}  # the trained video world (tests/test_video_world_claims.py)
    assert set(PRESETS) == set(FAMILY_OF) | set(CONDITIONAL_WORLDS) | trained
    assert set(FAMILIES) == {"sd", "sdxl", "unet3d", "cogvideox"}


@pytest.mark.parametrize("preset", list(FAMILY_OF))
def test_preset_through_loader_prompt_codec_denoiser_and_scheduler_step(specs, preset):
    spec = specs(preset)
    assert spec.family == FAMILY_OF[preset] and spec.model_id == preset
    parts = spec.modules()
    assert all(not p.requires_grad for m in parts.values() for p in m.parameters())
    assert all(not m.training for m in parts.values())

    # prompts: cached when no gradient is needed
    cond = spec.encode_prompt(["a photo of a cat", "a dog"])
    assert cond.batch_size == 2
    again = spec.encode_prompt(["a photo of a cat", "a dog"])
    assert all(torch.equal(cond[k], again[k]) for k in cond.keys())
    assert spec.encode_prompt(["a dog"]) is spec.encode_prompt(["a dog"])
    assert torch.equal(spec.encode_prompt(["a dog"])["encoder_hidden_states"][0], cond["encoder_hidden_states"][1])

    # codec
    f = FRAMES.get(preset, 2)
    torch.manual_seed(0)
    pixels = torch.rand(1, 3, f, 16, 16) * 2 - 1
    z = spec.encode(pixels)
    assert z.shape == (1, *spec.latent_shape(f, 16, 16))
    if preset == "tiny-cogvideox":
        assert z.shape[2] == (f - 1) // 4 + 1 == 3
    back = spec.decode(z)
    assert back.shape == pixels.shape and back.abs().max() <= 1
    if spec.pixel_space:
        assert torch.equal(z, pixels) and torch.equal(back, pixels)

    # one denoiser call, differentiable in z
    zb = z.repeat(2, 1, 1, 1, 1).float().requires_grad_(True)
    out = spec(zb, 500, cond)
    assert out.shape == zb.shape and out.dtype == zb.dtype
    out.square().mean().backward()
    assert zb.grad is not None and zb.grad.abs().sum() > 0

    # one step of the family's own scheduler
    sch = spec.scheduler
    assert type(sch).__name__ == SCHEDULER_OF[preset]
    sch.set_timesteps(4)
    t = sch.timesteps[0]
    prev = sch.step(out.detach(), t, zb.detach()).prev_sample
    assert prev.shape == zb.shape and torch.isfinite(prev).all()


def test_family_detected_from_model_index_and_from_denoiser_config(tmp_path):
    for preset, fam in FAMILY_OF.items():
        path = resolve_model_path(preset)
        found = detect_family(path)
        assert found[0] == fam and "model_index.json" in found[1]
        if preset == "tiny-world":
            continue
        bare = linked_copy(path, tmp_path / preset, index=False)
        found = detect_family(bare)
        assert found[0] == fam and ("unet/config.json" in found[1] or "transformer/config.json" in found[1])
        assert FAMILIES[fam].detect(bare) and not FAMILIES["sd" if fam != "sd" else "sdxl"].detect(bare)
    spec = load_model(str(tmp_path / "tiny-sdxl"))  # no model_index.json: still the SDXL spec
    assert spec.family == "sdxl" and spec.model_id == str(tmp_path / "tiny-sdxl")


def test_folder_of_another_family_is_refused_naming_both(tmp_path):
    with pytest.raises(ModelFamilyError, match=r"'sdxl' model .*model_index.json.*family='sd'"):
        load_model("tiny-sdxl", family="sd")
    with pytest.raises(ModelFamilyError, match=r"'cogvideox' model.*not 'unet3d'"):
        FAMILIES["unet3d"].load(resolve_model_path("tiny-cogvideox"))
    # model_index.json and the denoiser disagree
    bad = linked_copy(resolve_model_path("tiny-unet3d"), tmp_path / "bad")
    index = json.loads((bad / "model_index.json").read_text())
    (bad / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ModelFamilyError, match=r"model_index.json says 'sd' but .*unet/config.json.*'unet3d'"):
        load_model(str(bad))
    (bad / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableVideoDiffusionPipeline"}))
    with pytest.raises(ModelFamilyError, match="StableVideoDiffusionPipeline.*not a supported model family"):
        load_model(str(bad))
    with pytest.raises(ModelFamilyError, match="unknown model family 'svd'"):
        load_model("tiny-sd", family="svd")


@pytest.mark.parametrize("preset,part,hint", [
    ("tiny-cogvideox", "vae", "THUDM/CogVideoX-5b"),
    ("tiny-sdxl", "text_encoder_2", "stable-diffusion-xl-base-1.0"),
    ("tiny-unet3d", "tokenizer", "zeroscope_v2_576w"),
    ("tiny-sd", "vae", "stable-diffusion-v1-5"),  # model_index.json lists a VAE: not pixel space
])
def test_folder_missing_a_part_names_family_part_and_download(tmp_path, preset, part, hint):
    folder = linked_copy(resolve_model_path(preset), tmp_path / "m", skip=(part,))
    with pytest.raises(ModelNotFoundError, match=rf"(?s)\({FAMILY_OF[preset]}\) lacks {part}/.*huggingface-cli download.*{hint}"):
        load_model(str(folder))


def test_missing_folder_names_every_family_download(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist") as e:
        load_model(str(tmp_path / "nope"))
    for fam in FAMILIES:
        assert f"{fam}: " in str(e.value)
    with pytest.raises(ModelNotFoundError, match="THUDM/CogVideoX-5b"):
        load_model(str(tmp_path / "nope"), family="cogvideox")


def test_part_without_weights_is_named(tmp_path):
    folder = linked_copy(resolve_model_path("tiny-cogvideox"), tmp_path / "m", skip=("transformer",))
    (folder / "transformer").mkdir()
    shutil.copy(resolve_model_path("tiny-cogvideox") / "transformer" / "config.json", folder / "transformer")
    with pytest.raises(ModelNotFoundError, match=r"lacks transformer/ weights"):
        load_model(str(folder))


def test_sdxl_denoiser_without_added_conditions_is_a_clear_error(specs):
    spec = specs("tiny-sdxl")
    cond = spec.encode_prompt(["a cat"])
    z = torch.randn(1, 4, 2, 8, 8)
    for drop in ("text_embeds", "time_ids"):
        partial = Conditioning({k: v for k, v in cond.tensors.items() if k != drop})
        with pytest.raises(ConditioningError, match=rf"'sdxl' denoiser needs .*missing \['{drop}'\].*encode_prompt"):
            spec(z, 10, partial)
    with pytest.raises(ConditioningError, match=r"'sd' denoiser does not take conditioning entries \['text_embeds', 'time_ids'\]"):
        specs("tiny-sd")(z, 10, cond)


def test_sdxl_conditioning_shapes_and_per_frame_added_conditions(specs):
    spec = specs("tiny-sdxl")
    te1, te2 = spec.text_encoders
    cond = spec.encode_prompt(["a cat", "a dog", "a car"], size=(32, 48))
    assert cond["encoder_hidden_states"].shape == (3, 16, te1.config.hidden_size + te2.config.hidden_size)
    assert cond["text_embeds"].shape == (3, te2.config.projection_dim)
    assert cond["time_ids"].tolist() == [[32, 48, 0, 0, 32, 48]] * 3
    assert spec.encode_prompt(["a cat"])["time_ids"].tolist() == [[32, 32, 0, 0, 32, 32]]  # default: native size
    # the video denoiser is the image UNet per frame with the added conditions of its clip
    torch.manual_seed(0)
    z = torch.randn(3, 4, 2, 16, 24)
    with torch.no_grad():
        out = spec(z, 400, cond)
        for f in range(2):
            ref = spec.unet(z[:, :, f], torch.tensor([400] * 3), encoder_hidden_states=cond["encoder_hidden_states"],
                            added_cond_kwargs={"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}).sample
            assert torch.allclose(out[:, :, f], ref, atol=1e-5)


def test_prompt_encoding_equals_the_diffusers_pipelines(specs):
    """The specs call diffusers' own pipeline helpers on their parts; the full pipelines agree."""
    from diffusers import CogVideoXPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    prompts = ["a photo of a cat", "a red car"]
    sd = specs("tiny-sd")
    pipe = StableDiffusionPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=sd.unet,
                                   scheduler=sd.scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    with torch.no_grad():
        ref, _ = pipe.encode_prompt(prompts, "cpu", 1, False)
    assert torch.equal(sd.encode_prompt(prompts)["encoder_hidden_states"], ref)

    xl = specs("tiny-sdxl")
    pipe = StableDiffusionXLPipeline(vae=xl.vae, text_encoder=xl.text_encoders[0], text_encoder_2=xl.text_encoders[1],
                                     tokenizer=xl.tokenizers[0], tokenizer_2=xl.tokenizers[1], unet=xl.unet,
                                     scheduler=xl.scheduler, add_watermarker=False)
    with torch.no_grad():
        emb, _, pooled, _ = pipe.encode_prompt(prompts, device="cpu", do_classifier_free_guidance=False)
    cond = xl.encode_prompt(prompts, size=(64, 96))
    assert torch.equal(cond["encoder_hidden_states"], emb) and torch.equal(cond["text_embeds"], pooled)
    ids = pipe._get_add_time_ids((64, 96), (0, 0), (64, 96), torch.float32, text_encoder_projection_dim=32)
    assert torch.equal(cond["time_ids"], ids.expand(2, -1))
    with torch.no_grad():  # CFG without a negative prompt: SDXL's pipeline zeroes the unconditional embeddings
        _, neg, _, neg_pooled = pipe.encode_prompt(prompts[:1], device="cpu", do_classifier_free_guidance=True)
    null = xl.unconditional(size=(64, 96))
    assert torch.equal(null["encoder_hidden_states"], neg) and torch.equal(null["text_embeds"], neg_pooled)
    assert torch.equal(null["time_ids"], ids)
    assert torch.equal(sd.unconditional()["encoder_hidden_states"], sd.encode_prompt([""])["encoder_hidden_states"])

    cog = specs("tiny-cogvideox")
    pipe = CogVideoXPipeline(tokenizer=cog.tokenizers[0], text_encoder=cog.text_encoders[0], vae=cog.vae,
                             transformer=cog.transformer, scheduler=cog.scheduler)
    with torch.no_grad():
        emb, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, max_sequence_length=16, device="cpu")
    assert torch.equal(cog.encode_prompt(prompts)["encoder_hidden_states"], emb)
    cos, sin = pipe._prepare_rotary_positional_embeddings(32, 48, 3, torch.device("cpu"))
    ours = cog.rotary_embeddings(3, 8, 12, torch.device("cpu"))
    assert torch.equal(ours[0], cos) and torch.equal(ours[1], sin)


def test_cogvideox_frame_counts_its_vae_cannot_round_trip_are_refused(specs):
    spec = specs("tiny-cogvideox")
    with pytest.raises(VideoSizeError, match=r"clip.mp4: 13 frames: .*8k\+1.*come back as 16.*9 or 17 frames"):
        spec.check_video_size(13, 32, 32, where="clip.mp4")
    with pytest.raises(VideoSizeError, match=r"encode\(pixels\): 8 frames.*1 or 9 frames"):
        spec.encode(torch.zeros(1, 3, 8, 32, 32))
    for f in (1, 9, 17):
        spec.check_video_size(f, 32, 32)
    assert spec.latent_shape(17, 32, 32) == (4, 5, 8, 8)


def test_spatial_sizes_a_family_cannot_take_are_refused_with_the_nearest(specs):
    cog = specs("tiny-cogvideox")  # VAE ×4 × patch 2
    with pytest.raises(VideoSizeError, match=r"--height: height 36 is not a multiple of 8 \(VAE factor 4 × patch size 2.*32 or 40"):
        cog.check_video_size(9, 36, 32, where="--height")
    sd = specs("tiny-sd")  # VAE ×2
    with pytest.raises(VideoSizeError, match=r"width 33 is not a multiple of 2 .*VAE's downsampling.*32 or 34"):
        sd.check_video_size(3, 32, 33)
    with pytest.raises(VideoSizeError, match="width 31"):
        sd.encode(torch.zeros(1, 3, 2, 32, 31))
    specs("tiny-world").check_video_size(3, 31, 17)  # pixel space takes any size
    specs("tiny-unet3d").check_video_size(5, 24, 40)  # and any frame count for per-frame VAEs


def test_cogvideox_rotary_embeddings_follow_the_actual_latent_grid(specs):
    spec = specs("tiny-cogvideox")
    cond = spec.encode_prompt(["a cat"])
    assert spec.token_grid((4, 3, 8, 12)) == (3, 4, 6)
    z = torch.randn(1, 4, 3, 8, 12)  # 32×48 px, not the transformer's 32×32 sample size
    with torch.no_grad():
        out = spec(z, 999, cond)
        # the same call with rotary embeddings of the sample grid would not even fit
        x = z.permute(0, 2, 1, 3, 4)
        ref = spec.transformer(x, cond["encoder_hidden_states"], torch.tensor([999]),
                               image_rotary_emb=spec.rotary_embeddings(3, 8, 12, "cpu"), return_dict=False)[0]
    assert out.shape == z.shape and torch.equal(out, ref.permute(0, 2, 1, 3, 4))
    assert spec.transformer.config.attention_head_dim % 16 == 0


def test_scheduler_is_the_folders_own_class_and_config(specs, tmp_path):
    from diffusers import CogVideoXDDIMScheduler

    for preset in FAMILY_OF:
        spec = specs(preset)
        saved = json.loads((resolve_model_path(preset) / "scheduler" / "scheduler_config.json").read_text())
        assert type(spec.scheduler).__name__ == saved["_class_name"]
        for k, v in saved.items():
            if not k.startswith("_"):
                assert spec.scheduler.config[k] == v, (preset, k)
    cog = specs("tiny-cogvideox").scheduler
    assert cog.config.snr_shift_scale == 1.0 and cog.config.timestep_spacing == "trailing"
    assert cog.config.rescale_betas_zero_snr and cog.config.prediction_type == "v_prediction"
    assert float(cog.alphas_cumprod[999]) < 1e-6  # zero terminal SNR
    assert torch.equal(cog.alphas_cumprod, CogVideoXDDIMScheduler(snr_shift_scale=1.0, rescale_betas_zero_snr=True).alphas_cumprod)
    # re-typed as DDIMScheduler, snr_shift_scale would be dropped: refused naming the file and field
    bad = linked_copy(resolve_model_path("tiny-cogvideox"), tmp_path / "m", skip=("scheduler",))
    (bad / "scheduler").mkdir()
    cfg = json.loads((resolve_model_path("tiny-cogvideox") / "scheduler" / "scheduler_config.json").read_text())
    (bad / "scheduler" / "scheduler_config.json").write_text(json.dumps({**cfg, "_class_name": "DDIMScheduler"}))
    with pytest.raises(ModelFamilyError, match=r"scheduler_config.json: _class_name 'DDIMScheduler' ignores snr_shift_scale"):
        load_model(str(bad))
    (bad / "scheduler" / "scheduler_config.json").write_text(json.dumps({**cfg, "_class_name": "NoSuchScheduler"}))
    with pytest.raises(ModelFamilyError, match="'NoSuchScheduler' is not a diffusers scheduler class"):
        load_model(str(bad))


def test_sd_spec_keeps_the_old_parts_interface():
    from modules.adapters.export import base_checksum
    from modules.models import load_parts
    parts = load_parts("tiny-sd")
    assert parts.family == "sd" and not parts.pixel_space
    assert parts.text_encoder is parts.text_encoders[0] and parts.tokenizer is parts.tokenizers[0]
    assert parts.checksum() == base_checksum(parts.unet)
    assert isinstance(parts.model, VideoUNet) and parts.model.frame_attention == "per_frame"
    assert not parts.model.has_temporal
    assert load_parts("tiny-world").pixel_space


def test_inflate_replaces_the_denoiser_once():
    spec = load_model("tiny-sd")
    base = spec.model
    torch.manual_seed(0)
    z = torch.randn(1, 4, 1, 8, 8).expand(-1, -1, 3, -1, -1).contiguous()  # identical frames
    cond = spec.encode_prompt(["a cat"])
    with torch.no_grad():
        ref = spec(z, 300, cond)
        video = spec.inflate("first", temporal=True)
        assert spec.model is video is not base and video.has_temporal and video.frame_attention == "first"
        assert torch.allclose(spec(z, 300, cond), ref, atol=1e-5)  # zero-initialised temporal layers
    with pytest.raises(ValueError, match="already has temporal layers"):
        spec.inflate()


def test_a_unet_wrapped_outside_the_spec_is_not_silently_rewired():
    spec = load_model("tiny-sd")
    own = VideoUNet(spec.unet, "first")  # how SAVE / Tune-A-Video wrapped the UNet before specs
    with pytest.raises(ValueError, match="already wrapped by a VideoUNet built outside the spec"):
        spec.model
    spec.model = own
    assert spec.model is own and own.frame_attention == "first"
    with pytest.raises(ValueError, match="wrapping this spec's own unet"):
        spec.model = VideoUNet(load_model("tiny-sd").unet)


def test_prompt_cache_follows_the_text_encoder_weights():
    spec = load_model("tiny-sd")
    a = spec.encode_prompt(["a cat"])["encoder_hidden_states"].clone()
    with torch.no_grad():
        spec.text_encoder.final_layer_norm.bias.add_(1.0)  # e.g. an optimiser step
    b = spec.encode_prompt(["a cat"])["encoder_hidden_states"]
    assert torch.allclose(b, a + 1.0, atol=1e-5)
    # with grad: a graph to trainable text-encoder weights, never cached
    spec.text_encoder.final_layer_norm.bias.requires_grad_(True)
    g = spec.encode_prompt(["a cat"], grad=True)["encoder_hidden_states"]
    assert g.requires_grad and not spec.encode_prompt(["a cat"])["encoder_hidden_states"].requires_grad


def test_concat_latents_are_appended_and_channel_counts_checked(specs):
    spec = specs("tiny-unet3d")
    cond = spec.encode_prompt(["a cat"])
    z = torch.randn(1, 4, 2, 8, 8)
    with pytest.raises(ConditioningError, match=r"takes 4 input channels, got 4 \(latents\) \+ 1 \(concat_latents\)"):
        spec(z, 10, cond.with_(concat_latents=torch.zeros(1, 1, 2, 8, 8)))
    with pytest.raises(ValueError, match="timestep must be"):
        spec(z, torch.tensor([1, 2, 3]), cond)


@pytest.mark.parametrize("preset,pipeline", [
    ("tiny-sd", "StableDiffusionPipeline"), ("tiny-sdxl", "StableDiffusionXLPipeline"),
    ("tiny-unet3d", "TextToVideoSDPipeline"), ("tiny-cogvideox", "CogVideoXPipeline"),
])
def test_tiny_presets_are_real_diffusers_folders(preset, pipeline):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(resolve_model_path(preset))
    assert type(pipe).__name__ == pipeline


def test_sentencepiece_tokenizer_without_its_package_is_a_clear_error(tmp_path):
    import importlib.util

    from modules.models.spec import load_tokenizer

    if importlib.util.find_spec("sentencepiece") is not None:
        pytest.skip("sentencepiece is installed")
    (tmp_path / "spiece.model").write_bytes(b"not a real model")
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "T5Tokenizer"}')
    with pytest.raises(ImportError, match=r"spiece.model.*pip install sentencepiece"):
        load_tokenizer(tmp_path)
