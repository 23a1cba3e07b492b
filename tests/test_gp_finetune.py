"""GP-noise fine-tuning (modules/gp_finetune.py) on tiny-sdxl and the tiny world: the widened model
equals the base at init, exactly the UNet trains, the noise switch changes the noise statistics as
specified, SDXL's per-item time ids, export -> from_pretrained gives identical outputs, training lowers
the loss and restores, bad input is refused."""
import json

import pytest
import torch
from diffusers import UNet2DConditionModel
from torch.utils.data import default_collate

from data.restoration import RestorationDataModule
from modules.gp_finetune import (
    GPFinetuneModule,
    RestorationInputError,
    baseline,
    load_finetuned,
    region_psnr,
    restore,
)
from modules.models.spec import ModelFamilyError, load_model
from modules.noise.gp import covariance, default_lengthscale


def batch_for(module, task, n=2, size=32, seed=0):
    dm = RestorationDataModule(task=task, scale=module.scale, size=size, resize=40, batch_size=n, seed=seed,
                               caption_dropout=0.0)
    dm.setup()
    return default_collate([dm.train_set[i] for i in range(n)])


@pytest.fixture(scope="module")
def sdxl_sr():
    return GPFinetuneModule(model="tiny-sdxl", task="super_resolution")


@pytest.mark.parametrize("model,task,channels", [("tiny-sdxl", "super_resolution", 8), ("tiny-sdxl", "inpainting", 9),
                                                 ("tiny-world", "super_resolution", 6), ("tiny-world", "inpainting", 7)])
def test_the_widened_model_equals_the_base_at_init(model, task, channels):
    base = load_model(model)
    module = GPFinetuneModule(model=model, task=task)
    unet = module.unet
    assert unet.config.in_channels == channels and unet.conv_in.in_channels == channels
    c = base.latent_channels
    w_old, w_new = base.unet.conv_in.weight, unet.conv_in.weight
    assert torch.equal(w_new[:, :c], w_old) and not w_new[:, c:].any()
    assert torch.equal(unet.conv_in.bias, base.unet.conv_in.bias)
    batch = batch_for(module, task)
    cond = module.conditioning(batch)
    assert cond["concat_latents"].abs().sum() > 0  # real conditioning, ignored only through the zero weights
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, c, 1, *cond["concat_latents"].shape[-2:], generator=g)
    t = torch.tensor([10, 700])
    plain = {k: v for k, v in cond.tensors.items() if k != "concat_latents"}
    from modules.conditioning import Conditioning

    with torch.no_grad():
        ref = base(z, t, Conditioning(plain))
        out = module.spec(z, t, cond)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5), (out - ref).abs().max()


def test_exactly_the_unet_trains(sdxl_sr, tmp_path):
    module = sdxl_sr
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable == {f"unet.{n}" for n, _ in module.spec.unet.named_parameters()}
    frozen = {n.split(".")[0] for n, p in module.named_parameters() if not p.requires_grad}
    assert frozen == {"vae", "text_encoder", "text_encoder_2"}
    assert all(p.dtype == torch.float32 for p in module.unet.parameters())
    assert set(module.trainable_state()) == trainable
    opt = module.configure_optimizers()
    g = opt.param_groups[0]
    assert (g["lr"], g["betas"], g["weight_decay"], g["eps"]) == (5e-6, (0.9, 0.999), 1e-2, 1e-8)
    assert {id(p) for p in g["params"]} == {id(p) for p in module.unet.parameters()}
    assert module.grad_clip == 1.0


def test_the_noise_switch_changes_the_noise_statistics_as_specified():
    like = torch.zeros(4, 4, 1, 32, 32)
    k1 = covariance(torch.tensor([1 / 32, 0.0]), default_lengthscale(32)).item()  # 0.341
    stats = {}
    for kind in ("gp", "white"):
        m = GPFinetuneModule(model="tiny-world", task="inpainting", noise=kind)
        m.train_iteration = 5
        x = m.sample_noise(like).double()
        assert torch.equal(x, m.sample_noise(like).double())  # keyed on (seed, iteration, rank, stream)
        var = x.pow(2).mean().item()
        horiz = ((x[..., 1:] * x[..., :-1]).mean() / x.pow(2).mean()).item()
        vert = ((x[..., 1:, :] * x[..., :-1, :]).mean() / x.pow(2).mean()).item()
        chan = (x[:, :2] * x[:, 2:]).mean().item()
        stats[kind] = (var, horiz, vert, chan)
        assert abs(var - 1) < 0.1 and abs(chan) < 0.05
    # GP: neighbours correlate as the truncated spectrum says; white: not at all
    assert abs(stats["gp"][1] - k1) < 0.05 and abs(stats["gp"][2] - k1) < 0.05
    assert abs(stats["white"][1]) < 0.03 and abs(stats["white"][2]) < 0.03


def test_gp_parameters_reach_the_sampler():
    m = GPFinetuneModule(model="tiny-world", task="inpainting", noise="gp",
                         gp={"features": 500, "lengthscale": 0.1, "truncation": 2.0})
    m.train_iteration = 1
    x = m.sample_noise(torch.zeros(8, 3, 1, 32, 32)).double()
    one = ((x[..., 1:] * x[..., :-1]).mean() / x.pow(2).mean()).item()
    assert abs(one - covariance(torch.tensor([1 / 32, 0.0]), 0.1).item()) < 0.05  # ≈ 0.95: a much smoother field


def test_truncated_snr_weighting_and_the_conv_in_learning_rate():
    """`loss_weighting: truncated_snr`: ε-MSE × max(1, 1/SNR(t)) per item (x0-MSE × max(SNR, 1)), capped by
    `max_loss_weight`; `conv_in_lr_scale` gives the widened conv_in its own AdamW group."""
    m = GPFinetuneModule(model="tiny-world", task="super_resolution", loss_weighting="truncated_snr",
                         conv_in_lr_scale=10.0, lr=3e-4)
    acp = m.spec.scheduler.alphas_cumprod.double()
    t = torch.tensor([0, 100, 300, 500, 800, 999])
    snr = acp[t] / (1 - acp[t])
    w = m.loss_weights(t).double()
    assert torch.allclose(w, torch.clamp(1 / snr, min=1.0), rtol=1e-5)
    assert w[0] == 1 and w[1] == 1 and w[-1] > 100  # SNR >= 1 keeps the plain loss; t = 999 weighs ~200×
    out, target = torch.zeros(2, 3, 1, 4, 4), torch.ones(2, 3, 1, 4, 4)
    out[1] = 0.5
    aux = type("Aux", (), {"output": out, "target": target, "t": torch.tensor([0, 800])})()
    expected = (1.0 * 1.0 + 0.25 * m.loss_weights(torch.tensor([800])).item()) / 2
    assert abs(m.weighted_loss(aux).item() - expected) < 1e-4
    capped = GPFinetuneModule(model="tiny-world", task="super_resolution", loss_weighting="truncated_snr",
                              max_loss_weight=20.0)
    assert capped.loss_weights(torch.tensor([999])).item() == 20.0
    groups = m.configure_optimizers().param_groups
    assert [g["name"] for g in groups] == ["unet", "conv_in"] and groups[1]["lr"] == pytest.approx(3e-3)
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in m.unet.conv_in.parameters()}
    assert sum(len(g["params"]) for g in groups) == len(list(m.unet.parameters()))
    plain = GPFinetuneModule(model="tiny-world", task="super_resolution")
    assert len(plain.configure_optimizers().param_groups) == 1
    with pytest.raises(ValueError, match="loss_weighting"):
        GPFinetuneModule(model="tiny-world", task="super_resolution", loss_weighting="min_snr")


def test_sdxl_time_ids_are_built_per_item(sdxl_sr):
    batch = batch_for(sdxl_sr, "super_resolution")
    batch["original_size"] = torch.tensor([[512, 768], [300, 200]])
    batch["crop_top_left"] = torch.tensor([[3, 5], [0, 7]])
    ids = sdxl_sr.conditioning(batch)["time_ids"]
    assert ids.tolist() == [[512, 768, 3, 5, 32, 32], [300, 200, 0, 7, 32, 32]]


def test_export_reloads_with_from_pretrained_and_gives_identical_outputs(tmp_path):
    module = GPFinetuneModule(model="tiny-sdxl", task="inpainting")
    with torch.no_grad():  # move the weights away from the base so the test sees them
        module.unet.conv_in.weight.add_(0.01)
    out = module.export(tmp_path / "export", step=7)
    meta = json.loads((out / "export.json").read_text())
    assert meta["task"] == "inpainting" and meta["noise"] == "gp" and meta["gp_features"] == 3000
    assert meta["in_channels"] == 9 and meta["step"] == 7 and "per coordinate" in meta["gp_truncation"]
    card = (out / "README.md").read_text()
    assert "| noise | gp |" in card and "| task | inpainting |" in card
    loaded = UNet2DConditionModel.from_pretrained(out, subfolder="unet")
    assert loaded.config.in_channels == 9
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 9, 16, 16, generator=g)
    t = torch.tensor([5, 500])
    enc = torch.randn(2, 16, 64, generator=g)
    added = {"text_embeds": torch.randn(2, 32, generator=g), "time_ids": torch.tensor([[32, 32, 0, 0, 32, 32]] * 2).float()}
    with torch.no_grad():
        a = module.unet(x, t, enc, added_cond_kwargs=added).sample
        b = loaded(x, t, enc, added_cond_kwargs=added).sample
    assert torch.equal(a, b)


@pytest.mark.parametrize("task", ["super_resolution", "inpainting"])
def test_tiny_sdxl_trains_exports_reloads_and_restores(task, tmp_path):
    torch.manual_seed(0)
    module = GPFinetuneModule(model="tiny-sdxl", task=task, lr=1e-3)
    opt = module.configure_optimizers()
    batch = batch_for(module, task, n=4)

    z0 = module.spec.encode(batch["pixel_values"][:, :, None]).float()
    cond = module.conditioning(batch)

    def fixed_loss():  # the same noise and timesteps every time (a fixed iteration key)
        module.train_iteration = 10**6
        with torch.no_grad():
            return module.diffusion_loss(z0, cond)[0].item()

    before = fixed_loss()
    module.unet.train()
    for step in range(10):
        module.train_iteration = step + 1
        loss, aux = module.diffusion_loss(z0, cond)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.unet.parameters(), module.grad_clip)
        opt.step()
    module.unet.eval()
    after = fixed_loss()
    assert after < 0.7 * before, (before, after)

    out = module.export(tmp_path / "export", step=10)
    spec, card = load_finetuned("tiny-sdxl", out)
    assert card["task"] == task and spec.in_channels == module.spec.in_channels
    with pytest.raises(ValueError, match="fine-tuned from a base with checksum"):
        load_finetuned("tiny-sd", out)
    low = batch.get("low_res")
    kw = {"low_res": low[:1]} if task == "super_resolution" else {"pixels": batch["pixel_values"][:1], "mask": batch["mask"][:1]}
    img = restore(spec, task, [batch["caption"][0]], num_inference_steps=4, seed=3, **kw)
    mine = restore(module.spec, task, [batch["caption"][0]], num_inference_steps=4, seed=3, **kw)
    assert img.shape == (1, 3, 32, 32) and torch.isfinite(img).all()
    assert torch.allclose(img, mine, atol=1e-5)  # the reloaded model restores as the trained one


def test_restore_handles_clips_frame_by_frame():
    module = GPFinetuneModule(model="tiny-world", task="super_resolution")
    low = torch.rand(1, 3, 2, 8, 8) * 2 - 1  # a 2-frame clip
    out = restore(module.spec, "super_resolution", ["a photo"], low_res=low, num_inference_steps=1)
    assert out.shape == (1, 3, 2, 32, 32)
    # an explicit z_T (Warped passes warped noise) is used as given
    z = torch.zeros(1, 3, 2, 32, 32)
    a = restore(module.spec, "super_resolution", ["a photo"], low_res=low, num_inference_steps=1, noise=z)
    assert a.shape == out.shape and not torch.equal(a, out)


def test_metrics_and_baselines():
    x = torch.zeros(1, 3, 4, 4)
    y = x.clone()
    y[..., :2, :] = 0.2
    region = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    region[..., :2, :] = True
    assert region_psnr(y, x, region).item() == pytest.approx(10 * torch.log10(torch.tensor(4 / 0.04)).item(), abs=1e-4)
    assert region_psnr(y, x).item() == pytest.approx(10 * torch.log10(torch.tensor(4 / 0.02)).item(), abs=1e-4)
    px = torch.rand(1, 3, 4, 4)
    mask = region.float()
    filled = baseline("inpainting", pixels=px, mask=mask)
    keep_mean = px[..., 2:, :].mean(dim=(2, 3))
    assert torch.allclose(filled[..., :2, :], keep_mean[..., None, None].expand(1, 3, 2, 4))
    assert torch.equal(filled[..., 2:, :], px[..., 2:, :])


def test_bad_input_is_refused_with_the_fix():
    module = GPFinetuneModule(model="tiny-world", task="super_resolution")  # ×4
    batch = batch_for(module, "super_resolution")
    batch["low_res"] = torch.nn.functional.avg_pool2d(batch["pixel_values"], 8)  # ×8 data for a ×4 model
    with pytest.raises(RestorationInputError, match=r"scale 4 .*does not match the target size \(32, 32\).*data.init_args.scale: 4"):
        module.conditioning(batch)
    inp = GPFinetuneModule(model="tiny-world", task="inpainting")
    b2 = batch_for(inp, "inpainting")
    b2["mask"] = b2["mask"][..., :16, :16]
    with pytest.raises(RestorationInputError, match="must be .* matching the image"):
        inp.conditioning(b2)
    with pytest.raises(RestorationInputError, match="needs `pixels` and `mask`.*task: inpainting"):
        inp.conditioning(batch)  # super-resolution data for an inpainting model
    with pytest.raises(ModelFamilyError, match="families .*sd.*sdxl"):
        GPFinetuneModule(model="tiny-unet3d")


def test_a_unet_with_another_channel_count_is_refused(tmp_path):
    import shutil

    from modules.models.spec import resolve_model_path

    src = resolve_model_path("tiny-sdxl")
    dst = tmp_path / "five"
    shutil.copytree(src, dst)
    unet = UNet2DConditionModel.from_pretrained(dst / "unet")
    from modules.gp_finetune import widen_conv_in

    widen_conv_in(unet, 5)
    unet.save_pretrained(dst / "unet")
    with pytest.raises(RestorationInputError, match="takes 5 channels, but task super_resolution needs 4 .* or 8"):
        GPFinetuneModule(model=str(dst), task="super_resolution")
    # a model already trained for the task (9 channels for inpainting) is taken as it is
    widen_conv_in(unet, 9)
    unet.save_pretrained(dst / "unet")
    m = GPFinetuneModule(model=str(dst), task="inpainting")
    assert not m.widened and m.unet.config.in_channels == 9
