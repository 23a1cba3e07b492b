import copy
import json

import lightning as L
import pytest
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader, Dataset

from modules.adapters.export import ExportMismatchError, apply_export, load_adapted_model
from modules.adapters.spectral import SpectralShiftLinear, apply_spectral_shift
from modules.callbacks.checkpoint_io import load_checkpoint_file
from modules.editing import EditConfig
from modules.models import VideoUNet
from modules.save import SAVEModule
from modules.training import NonFiniteLossError


class ClipRepeat(Dataset):
    """The bundled clip repeated; `nan_from` makes items from that index on contain NaN pixels."""

    def __init__(self, pixels, n, nan_from=None):
        self.pixels, self.n, self.nan_from = pixels[0], n, nan_from

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        px = self.pixels.clone()
        if self.nan_from is not None and i >= self.nan_from:
            px[:] = float("nan")
        return {"pixel_values": px, "prompt": "a photo of an astronaut", "index": i if self.nan_from else 0}


def trainer(tmp_path, steps, **kw):
    return L.Trainer(accelerator="cpu", max_steps=steps, max_epochs=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=str(tmp_path), limit_val_batches=0,
                     num_sanity_val_steps=0, **kw)


def test_spectral_shift_at_zero_equals_original(tiny_parts):
    lin = torch.nn.Linear(48, 32)
    x = torch.randn(5, 48)
    ref = lin(x)
    holder = torch.nn.Sequential(lin)
    mod = apply_spectral_shift(holder, ["0"])["0"]
    assert isinstance(holder[0], SpectralShiftLinear)
    assert "weight" not in dict(mod.named_parameters()) and "weight" not in mod.state_dict()  # not kept twice
    assert torch.allclose(mod(x), ref, atol=1e-5)
    assert [n for n, p in mod.named_parameters() if p.requires_grad] == ["delta"]
    with torch.no_grad():
        mod.delta.copy_(torch.linspace(-1, 1, 32))
    assert torch.allclose(mod.regulariser(), (mod.delta**2 * mod.S).sum())

    # whole inflated UNet: SAVE at δ = 0 equals the unmodified model
    video = VideoUNet(copy.deepcopy(tiny_parts.unet), "first")
    z, emb = torch.randn(1, 4, 3, 16, 16), torch.randn(1, 16, 32)
    with torch.no_grad():
        ref = video(z, 300, emb)
        from modules.adapters.export import query_layer_names

        names = query_layer_names(video.unet)
        assert len(names) == 14  # 7 transformer blocks × (attn1, attn2) in the tiny preset
        apply_spectral_shift(video.unet, names)
        out = video(z, 300, emb)
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()


def test_bad_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="spectral_lambda must be >= 0"):
        SAVEModule(spectral_lambda=-1.0)
    with pytest.raises(ValueError, match="frame_attention must be one of"):
        SAVEModule(frame_attention="diagonal")


@pytest.mark.parametrize("adapter", ["spectral", "full_query", "lora"])
def test_train_export_load_reproduces_output(tmp_path, sample_clip, adapter):
    torch.manual_seed(0)
    module = SAVEModule(adapter=adapter, lr_delta=5e-2, lr_query=1e-2, lr_lora=1e-2, lr_temporal=1e-2)
    trainer(tmp_path, 3).fit(module, DataLoader(ClipRepeat(sample_clip, 3), batch_size=1))
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    ckpt_state = module.trainable_state()
    assert set(ckpt_state) == trainable
    out_dir = module.export(tmp_path / "export")
    meta = json.loads((out_dir / "export.json").read_text())
    assert meta["adapter"] == adapter and meta["frame_attention"] == "first"
    if adapter == "spectral":
        with safe_open(str(out_dir / "spectral_shifts.safetensors"), "pt") as f:
            keys = list(f.keys())
            assert f.metadata()["method"] == "save" and json.loads(f.metadata()["hyperparameters"])["spectral_lambda"] == 1e-3
        assert len(keys) == 14 and all(k.endswith("to_q") for k in keys)
        assert any(float(module.spectral_summary()[k]["delta"].abs().max()) > 0 for k in keys)
    fresh = load_adapted_model("tiny-sd", out_dir).model
    base = VideoUNet(load_parts_fresh(), "first")
    z, emb = torch.randn(1, 4, 8, 16, 16), torch.randn(1, 16, 32)
    with torch.no_grad():
        a = module.video_unet.eval()(z, 400, emb)
        b = fresh.eval()(z, 400, emb)
        c = base.eval()(z, 400, emb)
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    assert (a - c).abs().max() > 1e-4  # training changed the model, and the export carries the change


def load_parts_fresh():
    from modules.models import load_parts

    return load_parts("tiny-sd").unet


def test_export_refuses_other_base_and_bad_files(tmp_path, sample_clip, tiny_parts):
    module = SAVEModule(adapter="spectral")
    out = module.export(tmp_path / "export")
    other = copy.deepcopy(tiny_parts.unet)
    with torch.no_grad():
        other.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight.add_(0.1)
    with pytest.raises(ExportMismatchError, match="trained on base model"):
        apply_export(VideoUNet(other), out)
    # a file missing a layer
    from safetensors.torch import load_file, save_file

    f = out / "spectral_shifts.safetensors"
    tensors = load_file(f)
    first = sorted(tensors)[0]
    save_file({k: v for k, v in tensors.items() if k != first}, f)
    with pytest.raises(ExportMismatchError, match="missing"):
        apply_export(VideoUNet(copy.deepcopy(tiny_parts.unet)), out)
    tensors[first] = torch.zeros(3)
    save_file(tensors, f)
    with pytest.raises(ExportMismatchError, match="has shape"):
        apply_export(VideoUNet(copy.deepcopy(tiny_parts.unet)), out)


class LossRecorder(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def test_resume_continues_loss_curve_exactly(tmp_path, sample_clip):
    from lightning.pytorch.callbacks import ModelCheckpoint

    data = lambda: DataLoader(ClipRepeat(sample_clip, 6), batch_size=1)  # noqa: E731
    full = LossRecorder()
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=3, save_top_k=-1)
    torch.manual_seed(0)
    trainer(tmp_path / "a", 6, callbacks=[full, ck]).fit(SAVEModule(lr_delta=5e-2), data())
    ckpt = tmp_path / "ck" / "epoch=0-step=3.ckpt"
    state = load_checkpoint_file(ckpt)  # weights_only
    assert all(".temporal." in k or k.endswith(".delta") for k in state["state_dict"])
    assert "optimizer_states" in state and state["global_step"] == 3
    other = SAVEModule(lr_delta=5e-2)
    with pytest.raises(ValueError, match="trained on a base model with checksum"):
        other.base_checksum = "0000"
        other.on_load_checkpoint(state)
    resumed = LossRecorder()
    torch.manual_seed(123)  # global RNG differs: per-step noise must not depend on it
    trainer(tmp_path / "b", 6, callbacks=[resumed]).fit(SAVEModule(lr_delta=5e-2), data(), ckpt_path=ckpt)
    assert resumed.losses == pytest.approx(full.losses[3:], rel=1e-5, abs=1e-7)
    assert len(resumed.losses) == 3


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, sample_clip):
    from lightning.pytorch.callbacks import ModelCheckpoint

    ck = ModelCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=1, save_last=True)
    with pytest.raises(NonFiniteLossError, match="in training iteration 3 "):
        trainer(tmp_path, 5, callbacks=[ck]).fit(SAVEModule(), DataLoader(ClipRepeat(sample_clip, 5, nan_from=2)))
    last = load_checkpoint_file(tmp_path / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_text_encoder_spectral_tuning_trains_its_queries(tmp_path, sample_clip):
    module = SAVEModule(train_text_encoder=True, lr_delta=5e-2)
    te_deltas = {n: p for n, p in module.text_encoder.named_parameters() if n.endswith(".delta")}
    assert len(te_deltas) == 2 and all(n.endswith("q_proj.delta") for n in te_deltas)  # 2 CLIP layers
    trainer(tmp_path, 2).fit(module, DataLoader(ClipRepeat(sample_clip, 2), batch_size=1))
    assert all(float(p.abs().max()) > 0 for p in te_deltas.values())
    parts = load_adapted_model("tiny-sd", module.export(tmp_path / "export"))
    a = module.spec.encode_prompt(["a photo of an astronaut"])["encoder_hidden_states"]
    b = parts.encode_prompt(["a photo of an astronaut"])["encoder_hidden_states"]
    assert torch.allclose(a, b, atol=1e-6)


def _loss(module, z0, emb):
    """SAVE's loss, ‖ε − ε̂‖² + λ Σ δᵀ diag(σ) δ, at a fixed noise level (ᾱ = 1/2)."""
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
    pred = module.video_unet((z0 + noise) / 2**0.5, torch.tensor([500]), emb)
    return torch.nn.functional.mse_loss(pred.float(), noise) + module.hparams.spectral_lambda * module.spectral_regulariser()


@pytest.mark.parametrize("temporal", ["full", "spectral", "frozen"])
@pytest.mark.parametrize("adapter", ["spectral", "full_query", "lora"])
def test_every_trainable_tensor_gets_gradient(adapter, temporal):
    """One optimiser step first: the temporal output projection (zero-initialised so the inflated model
    starts equal to the image model) and LoRA's B are zero at init, which blocks the gradient of
    whatever sits behind them on the very first backward. After one step they are non-zero, and the
    next forward/backward must reach every trainable tensor (for `temporal: spectral` the δ of the
    temporal to_q/to_k/to_v, which a spectral-shifted zero output projection blocked for ever)."""
    torch.manual_seed(0)
    module = SAVEModule(adapter=adapter, temporal=temporal, lr_delta=1e-2, lr_query=1e-2, lr_lora=1e-2,
                        lr_temporal=1e-2)
    trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
    temporal_names = [n for n in trainable if ".temporal." in n]
    if temporal == "frozen":
        assert not temporal_names
    else:
        assert temporal_names
    if temporal == "spectral":  # δ on q/k/v, the zero-initialised output projection and the norm in full
        assert {n.rsplit(".temporal.", 1)[1] for n in temporal_names} == {
            "attn_temp.to_q.delta", "attn_temp.to_k.delta", "attn_temp.to_v.delta",
            "attn_temp.to_out.0.weight", "attn_temp.to_out.0.bias", "norm_temp.weight", "norm_temp.bias"}
    opt = module.configure_optimizers()
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in trainable.values()}
    z0, emb = torch.randn(1, 4, 3, 16, 16), torch.randn(1, 16, 32)
    _loss(module, z0, emb).backward()
    opt.step()
    opt.zero_grad()
    _loss(module, z0, emb).backward()
    no_grad = [n for n, p in trainable.items() if p.grad is None or not bool(p.grad.abs().max() > 0)]
    assert not no_grad, f"{len(no_grad)}/{len(trainable)} trainable tensors got no gradient, e.g. {no_grad[:4]}"


def test_spectral_weight_is_rebuilt_in_fp32_under_autocast():
    """`bf16-mixed` runs the layers under autocast: Ŵ = U diag(ReLU(σ+δ)) Vᵀ must still be rebuilt in fp32
    (at δ = 0 it equals W to fp32 rounding), and only the layer's own matmul runs in bf16."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(320, 320)
    w0 = lin.weight.detach().clone()
    x = torch.randn(64, 320)
    mod = apply_spectral_shift(torch.nn.Sequential(lin), ["0"])["0"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w = mod.shifted_weight()
        ref = lin(x)  # the original layer under autocast: bf16(x) @ bf16(W)ᵀ
        out = mod(x)
        out_grad_path = mod(x.clone().requires_grad_(True))
    assert w.dtype == torch.float32
    rel = float((w - w0).abs().max() / w0.abs().max())
    assert rel <= 1e-5, rel  # rebuilt in bf16 this is ~8e-3 at 320×320
    for o in (out, out_grad_path):
        assert o.dtype == ref.dtype == torch.bfloat16
        # Ŵ rounds to the same bf16 weights as W: outputs equal but for ~1% one bf16 ulp apart (a sum within
        # 1e-6 of a rounding boundary); with Ŵ rebuilt in bf16, 58% of them differ
        assert float((o != ref).float().mean()) < 0.05
    out_grad_path.float().sum().backward()
    assert mod.delta.grad is not None and mod.delta.grad.dtype == torch.float32


@pytest.fixture(scope="module")
def tiny_sd_fp16_folder(tmp_path_factory):
    """The tiny-sd preset with its UNet saved in fp16 (as SD checkpoints are usually shipped)."""
    import shutil

    from diffusers import UNet2DConditionModel

    from modules.models.loading import resolve_model_path

    src = resolve_model_path("tiny-sd")
    dst = tmp_path_factory.mktemp("tiny-sd-fp16") / "model"
    shutil.copytree(src, dst)
    UNet2DConditionModel.from_pretrained(src / "unet", torch_dtype=torch.float16).save_pretrained(dst / "unet")
    return dst


def test_base_checksum_is_dtype_invariant(tiny_sd_fp16_folder):
    from modules.adapters.export import base_checksum, query_layer_names
    from modules.models import load_parts
    from modules.models.loading import tensor_checksum

    sums, raw = {}, {}
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        unet = load_parts(str(tiny_sd_fp16_folder), dtype=dt).unet
        sums[dt] = base_checksum(unet)
        mods = dict(unet.named_modules())
        raw[dt] = tensor_checksum([mods[n].weight for n in query_layer_names(unet)])  # not pre-rounded
    assert len(set(sums.values())) == 1, sums
    assert len(set(raw.values())) == 1, raw
    assert set(raw.values()) == set(sums.values())
    # a different base still differs: one query weight moved by one bf16 step
    unet = load_parts(str(tiny_sd_fp16_folder), dtype=torch.float32).unet
    with torch.no_grad():
        w = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
        w[0, 0] = w[0, 0] * (1 + 2 ** -6)
    assert base_checksum(unet) != sums[torch.float32]


def test_export_loads_onto_the_same_base_in_any_dtype(tmp_path):
    """The tiny-sd preset is stored in fp32: an fp16 load rounds twice (fp32 → fp16 → bf16) and its bf16
    checksum differs, so the export also carries a per-layer sketch of the base's query weights that
    is compared with a tolerance (precision changes them by ~1e-3, another base by far more)."""
    from modules.adapters.export import base_fingerprint, fingerprint_distance
    from modules.models import load_parts

    module = SAVEModule(adapter="spectral")
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(0.01)
    out = module.export(tmp_path / "export")
    stored = json.loads(json.loads((out / "export.json").read_text())["base_fingerprint"])
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        d = fingerprint_distance(base_fingerprint(load_parts("tiny-sd", dtype=dt).unet), stored)
        assert d < 5e-3, (dt, d)  # fp32: 0; fp16, bf16: the rounding
        vunet = load_adapted_model("tiny-sd", out, dtype=dt).model
        deltas = [m.delta for m in vunet.unet.modules() if isinstance(m, SpectralShiftLinear)]
        assert len(deltas) == 14 and all(torch.allclose(p, torch.full_like(p, 0.01)) for p in deltas)
    # another base (one query layer changed by ~2% of its weights) is refused in every dtype
    for dt in (torch.float32, torch.float16):
        other = load_parts("tiny-sd", dtype=dt).unet
        with torch.no_grad():
            w = other.up_blocks[1].attentions[0].transformer_blocks[0].attn2.to_q.weight
            w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(1)).to(w) * 0.02 * float(w.float().std()))
        with pytest.raises(ExportMismatchError, match="trained on base model"):
            apply_export(VideoUNet(other), out)
