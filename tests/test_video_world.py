"""The video world trainer (modules/video_world.py): initialisation from the image world, the text
encoder with motion words, a training step on the training base, the saved diffusers folder loaded
back through the `unet3d` family as a pixel-space spec, sampling through the one loop."""
import json

import pytest
import torch

from modules.video_world import (
    VideoUNetConfig, VideoWorldModule, classify_video, extend_text_encoder, init_from_image_unet, is_temporal,
)

SMALL = VideoUNetConfig(block_out_channels=(8, 16, 16), attention_head_dim=2, norm_num_groups=8)


@pytest.fixture(scope="module")
def world_module():
    return VideoWorldModule(init_from="tiny-world", ema_decay=0.9).eval()


def test_spatial_layers_come_from_the_image_world_and_temporal_layers_start_as_identity(world_module):
    from modules.models.spec import load_model

    m = world_module
    world = load_model("tiny-world")
    copied = set(m.init_report["copied"])
    assert copied == {k for k in m.unet.state_dict() if not is_temporal(k)}
    w2 = world.unet.state_dict()
    for k in ("conv_in.weight", "down_blocks.1.resnets.0.conv1.weight", "mid_block.attentions.0.proj_in.weight",
              "up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"):
        assert torch.equal(m.unet.state_dict()[k].flatten(), w2[k].flatten())
    # identity temporal layers: each output frame depends on its own input frame only
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 8, 32, 32, generator=g)
    cond = m.spec.encode_prompt(["a photo of a cat, panning left quickly"])
    y = x.clone()
    y[:, :, 3] = torch.randn(1, 3, 32, 32, generator=g)
    with torch.no_grad():
        a, b = m.spec(x, 500, cond), m.spec(y, 500, cond)
    keep = [f for f in range(8) if f != 3]
    assert torch.allclose(a[:, :, keep], b[:, :, keep], atol=1e-5)
    assert not torch.allclose(a[:, :, 3], b[:, :, 3], atol=1e-3)


def test_a_mismatched_image_layout_is_refused():
    from modules.models.spec import load_model
    from modules.video_world import build_video_unet

    with pytest.raises(ValueError, match="does not match the video UNet"):
        init_from_image_unet(build_video_unet(SMALL, 64), load_model("tiny-world").unet)


def test_motion_words_extend_the_tokenizer_and_keep_the_photo_words():
    from modules.models.spec import load_model

    world = load_model("tiny-world")
    tok, te = extend_text_encoder(world.tokenizer, world.text_encoder, ["panning", "left", ",", "photo"], seed=0)
    assert len(tok) == len(world.tokenizer) + 3  # "photo" was known
    ids = tok("a photo of a cat, panning left").input_ids
    assert tok.unk_token_id not in ids
    assert tok("a photo of a cat").input_ids == world.tokenizer("a photo of a cat").input_ids
    old = world.text_encoder.get_input_embeddings().weight
    assert torch.equal(te.get_input_embeddings().weight[:len(old)], old)
    # CLIP is causal: the caption's photo words are encoded exactly as before the motion words
    n = len(tok("a photo of a cat").input_ids) - 1  # without <eos>
    with torch.no_grad():
        h_new = te(tok(["a photo of a cat, panning left"], return_tensors="pt").input_ids)[0]
        h_old = world.text_encoder(world.tokenizer(["a photo of a cat"], return_tensors="pt").input_ids)[0]
    assert torch.allclose(h_new[0, :n], h_old[0, :n], atol=1e-5)


def test_training_step_checkpoint_and_saved_folder_roundtrip(tmp_path):
    from modules.editing import generate
    from modules.models.spec import load_model

    m = VideoWorldModule(unet=SMALL, init_from=None, ema_decay=0.9, seed=3)
    opt = m.configure_optimizers()["optimizer"]
    assert [g["name"] for g in opt.param_groups] == ["temporal", "spatial"]
    batch = {"pixel_values": torch.rand(1, 3, 8, 32, 32) * 2 - 1, "caption": ["a photo of a cat, panning left slowly"]}
    m.train()
    m.train_iteration = 1
    loss = m.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert m.unet.transformer_in.proj_out.weight.grad is not None  # the temporal layers learn
    opt.step()
    m.on_train_batch_end(None, batch, 0)
    ckpt = {}
    m.on_save_checkpoint(ckpt)
    assert set(ckpt["state_dict"]) == {f"unet.{n}" for n, _ in m.unet.named_parameters()}  # no text encoder, no EMA
    assert set(ckpt["ema_state"]) == set(m.ema.state_dict())
    out = m.save_video_world(tmp_path / "vw")
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "TextToVideoSDPipeline" and index["vae"] == [None, None]
    assert not (out / "vae").exists() and "seed: 3" in (out / "README.md").read_text()
    spec = load_model(str(out))
    assert spec.family == "unet3d" and spec.pixel_space and spec.unet.dtype == torch.float32
    assert spec.latent_shape(8, 32, 32) == (3, 8, 32, 32)
    cap = "a photo of a cat, panning left slowly"
    assert torch.allclose(spec.encode_prompt([cap])["encoder_hidden_states"],
                          m.spec.encode_prompt([cap])["encoder_hidden_states"], atol=1e-5)
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():  # the saved weights are the EMA's, in fp16
        ref = m.final_spec()(x, 400, m.spec.encode_prompt([cap]))
        assert torch.allclose(spec(x, 400, spec.encode_prompt([cap])), ref, atol=2e-2)
    v = generate(spec, [cap], 8, 32, 32, num_inference_steps=2, guidance_scale=3.0, progress=False)
    assert v.shape == (1, 3, 8, 32, 32) and v.abs().max() <= 1


def test_unet3d_folder_with_a_listed_vae_still_needs_it(tmp_path):
    from modules.models.loading import ModelNotFoundError
    from modules.models.spec import load_model

    m = VideoWorldModule(unet=SMALL, init_from=None, ema_decay=0.0)
    out = m.save_video_world(tmp_path / "vw")
    index = json.loads((out / "model_index.json").read_text())
    (out / "model_index.json").write_text(json.dumps({**index, "vae": ["diffusers", "AutoencoderKL"]}))
    with pytest.raises(ModelNotFoundError, match="vae/"):
        load_model(str(out))


def test_classifier_names_the_photos_of_training_clips():
    from data.motion_clips import MotionClips

    ds = MotionClips(length=8, caption_dropout=0, p_zoom=0, seed=2)
    for i in range(0, 8, 2):
        it = ds[i]
        labels, d = classify_video(it["pixel_values"])
        assert labels == [it["photo"]] * 8
        assert d.shape == (8, 8)


def test_mixed_noise_has_unit_marginals_and_frame_correlation_rho_and_only_shapes_generate():
    from modules.training import NOISE_SAMPLERS
    from modules.video_world import MIXED_RHO, MixedNoise, mix_frames

    z = NOISE_SAMPLERS["mixed"]((400, 3, 8, 8, 8), torch.Generator().manual_seed(0))
    assert abs(z.std().item() - 1) < 0.01 and abs(z.mean().item()) < 0.01
    a, b = z[:, :, 2].flatten(), z[:, :, 5].flatten()
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item() - MIXED_RHO) < 0.02
    # through the one loop: generate() starts from the mixed prior, edit_clip's sampling from its inversion
    from modules.editing import EditConfig, edit_clip, generate
    from modules.sampling import SamplingCallback

    class Spy(SamplingCallback):
        seen = {}

        def initial_noise(self, state, z):
            self.seen[state.extras["label"]] = z.clone()
            return z

    spec = VideoWorldModule(unet=SMALL, init_from=None, ema_decay=0.0).spec
    w = torch.randn(1, 3, 8, 32, 32)
    generate(spec, ["a cat"], 8, 32, 32, 1, 1.0, callbacks=[MixedNoise(), Spy()], noise=w, progress=False)
    assert torch.allclose(Spy.seen["generate"], mix_frames(w))
    res = edit_clip(spec, w.clamp(-1, 1), "a cat", EditConfig(num_inference_steps=1), callbacks=[MixedNoise(), Spy()],
                    progress=False)
    assert torch.equal(Spy.seen["reconstruct"], res.inversion.z)  # an inverted z_T is not re-drawn
    m = VideoWorldModule(unet=SMALL, init_from=None, ema_decay=0.0, noise="mixed")
    g1 = m.sample_noise(torch.zeros(1, 3, 8, 32, 32))
    assert torch.equal(g1, m.sample_noise(torch.zeros(1, 3, 8, 32, 32)))  # seeded by (seed, iteration, stream)


def test_min_snr_weighting_is_the_weighted_mse():
    m = VideoWorldModule(unet=SMALL, init_from=None, ema_decay=0.0, snr_gamma=1.0)
    m.train()
    m.train_iteration = 5
    x0 = torch.rand(4, 3, 8, 32, 32) * 2 - 1
    loss, aux = m.diffusion_loss(x0, m.spec.encode_prompt(["a photo of a cat"] * 4))
    extra = m.extra_loss({}, aux)["min_snr"]
    acp = m.spec.scheduler.alphas_cumprod[aux.t]
    w = torch.minimum(acp / (1 - acp), torch.tensor(1.0)) / (acp / (1 - acp))
    err = (aux.output - aux.target).pow(2).flatten(1).mean(1)
    assert torch.allclose(loss + extra, (w * err).mean(), rtol=1e-5)
    assert VideoWorldModule(unet=SMALL, init_from=None, ema_decay=0.0).extra_loss({}, aux) == {}


def test_truncated_snr_loss_weighting_is_an_x0_mse_at_high_noise():
    """`loss_weighting: truncated_snr`: the training step's diffusion term is mean(max(1, 1/SNR)·ε-MSE)
    per item (capped by `max_loss_weight`), the shared weights of the training base; with snr_gamma too
    it is refused."""
    from modules.training import truncated_snr_weights

    m = VideoWorldModule(unet=SMALL, init_from=None, ema_decay=0.0, loss_weighting="truncated_snr", max_loss_weight=50)
    m.train()
    m.train_iteration = 3
    batch = {"pixel_values": torch.rand(4, 3, 8, 32, 32) * 2 - 1, "caption": ["a photo of a cat, panning left"] * 4}
    total = m.training_step(batch, 0)
    m.train_iteration = 3  # the same noise and timesteps again
    _, aux = m.diffusion_loss(batch["pixel_values"], m.spec.encode_prompt(batch["caption"]))
    acp = m.spec.scheduler.alphas_cumprod.double()[aux.t]
    w = torch.clamp((1 - acp) / acp, min=1.0, max=50.0)
    err = (aux.output - aux.target).double().pow(2).flatten(1).mean(1)
    assert torch.allclose(total.double(), (w * err).mean(), rtol=1e-5)
    t = torch.tensor([100, 500, 800, 999])
    w = truncated_snr_weights(m.spec.scheduler, t)
    assert w[0] == 1.0 and 10 < w[2] < 40 and w[3] > 150  # x0-MSE: errors at high noise count, not ~SNR·them
    assert truncated_snr_weights(m.spec.scheduler, t, max_weight=50)[3] == 50
    with pytest.raises(ValueError, match="snr_gamma"):
        VideoWorldModule(unet=SMALL, init_from=None, loss_weighting="truncated_snr", snr_gamma=1.0)


def test_continuing_from_a_saved_video_world_takes_its_whole_unet_and_text_side(tmp_path):
    """init_from a `unet3d` folder (stage 2 of the recipe: configs/video_world/motion.yaml) keeps
    every UNet tensor — the temporal outputs are not zeroed again — and the tokenizer and text
    encoder as saved; a folder of another layout is refused with the field to fix."""
    first = VideoWorldModule(unet=SMALL, init_from=None, ema_decay=0.0, seed=4)
    with torch.no_grad():  # non-zero temporal outputs, as after training
        first.unet.transformer_in.proj_out.weight.normal_()
    out = first.save_video_world(tmp_path / "vw")
    m = VideoWorldModule(unet=SMALL, init_from=str(out), ema_decay=0.9)
    saved = first.final_unet.to(torch.float16).float().state_dict()
    for k, v in m.unet.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert m.unet.transformer_in.proj_out.weight.abs().sum() > 0
    assert torch.equal(m.ema.transformer_in.proj_out.weight, m.unet.transformer_in.proj_out.weight)
    cap = "a photo of a cat, panning left slowly"
    assert m.tokenizer(cap).input_ids == first.tokenizer(cap).input_ids
    assert torch.allclose(m.spec.encode_prompt([cap])["encoder_hidden_states"],
                          first.spec.encode_prompt([cap])["encoder_hidden_states"], atol=1e-6)
    with pytest.raises(ValueError, match="model.init_args.unet"):
        VideoWorldModule(unet=VideoUNetConfig(block_out_channels=(8, 16, 32), attention_head_dim=2, norm_num_groups=8),
                         init_from=str(out))


def test_high_noise_fraction_draws_that_share_of_timesteps_from_the_upper_range():
    m = VideoWorldModule(unet=SMALL, init_from=None, ema_decay=0.0, high_noise_fraction=0.8, high_noise_start=600)
    ts = []
    for i in range(40):
        m.train_iteration = i
        ts.append(m.sample_timesteps(50, 1000))
    t = torch.cat(ts).float()
    share = (t >= 600).float().mean().item()
    assert abs(share - (0.8 + 0.2 * 0.4)) < 0.04  # 80% from [600, 1000) plus the uniform draws that land there
    assert t.min() >= 0 and t.max() <= 999
    m.train_iteration = 7
    assert torch.equal(m.sample_timesteps(16, 1000), m.sample_timesteps(16, 1000))  # seeded per iteration
    plain = VideoWorldModule(unet=SMALL, init_from=None, ema_decay=0.0)
    plain.train_iteration = 7
    assert (plain.sample_timesteps(2000, 1000) >= 600).float().mean().item() < 0.45
    with pytest.raises(ValueError, match="high_noise_fraction"):
        VideoWorldModule(unet=SMALL, init_from=None, high_noise_fraction=1.5)


def test_frame_position_channel_starts_as_the_world_without_it_and_reloads_through_the_loader(tmp_path):
    """`unet.frame_position`: continuing from a stock video world widens `conv_in` with zero weights
    (step 0 predicts exactly what the world did), the family denoiser appends the frame's place in
    the clip (-1 … +1), the saved folder records it and loads back as a spec that appends it too; a
    world with the channel refuses a layout without it."""
    from modules.models.families.unet3d import frame_position_code
    from modules.models.spec import load_model

    first = VideoWorldModule(unet=SMALL, init_from=None, ema_decay=0.0, seed=5)
    with torch.no_grad():
        first.unet.transformer_in.proj_out.weight.normal_()
    plain = first.save_video_world(tmp_path / "plain")
    with_pos = VideoUNetConfig(**{**SMALL.__dict__, "frame_position": True})
    m = VideoWorldModule(unet=with_pos, init_from=str(plain), ema_decay=0.0)
    assert m.unet.config.in_channels == 4 and m.spec.frame_position
    assert torch.equal(m.unet.conv_in.weight[:, 3], torch.zeros_like(m.unet.conv_in.weight[:, 3]))
    z = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    ref = load_model(str(plain))
    cond = m.spec.encode_prompt(["a photo of a cat, panning left"])
    with torch.no_grad():
        assert torch.allclose(m.spec(z, 500, cond), ref(z, 500, cond), atol=1e-4)
        m.unet.conv_in.weight[:, 3].normal_()  # as after training: the frames now differ by their place
        same = z[:, :, :1].expand_as(z).contiguous()
        out = m.spec(same, 500, cond)
    assert (out[:, :, 0] - out[:, :, -1]).abs().mean() > 1e-3
    code = frame_position_code(z)
    assert code.shape == (2, 1, 8, 32, 32) and code[0, 0, 0, 0, 0] == -1 and code[0, 0, -1, 0, 0] == 1
    assert torch.allclose(code[0, 0, :, 0, 0], torch.linspace(-1, 1, 8))
    saved = m.save_video_world(tmp_path / "pos")
    assert json.loads((saved / "model_index.json").read_text())["frame_position"] is True
    assert "frame position: a fourth input channel" in (saved / "README.md").read_text()
    back = load_model(str(saved))
    assert back.frame_position and back.unet.config.in_channels == 4
    with torch.no_grad():
        assert torch.allclose(back(z, 500, cond), m.final_spec()(z, 500, cond), atol=5e-3)  # fp16 on disk
    assert not load_model(str(plain)).frame_position
    with pytest.raises(ValueError, match="frame_position: true"):
        VideoWorldModule(unet=SMALL, init_from=str(saved), ema_decay=0.0)
