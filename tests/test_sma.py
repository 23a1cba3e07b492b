"""SMA's hosts (modules/sma.py): what trains in each, the losses they optimise, MotionDirector's manual
optimisation and exact resume, inference adapters, exports read back by diffusers, clear errors."""
import copy
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from data.clip_dataset import ClipDataModule, ClipDataset
from modules.adapters.diffusers_lora import LoraMismatchError, load_diffusers_lora
from modules.adapters.formats import load_named_tensors, write_export
from modules.editing import EditConfig
from modules.losses.sma import MotionLossError
from modules.models.spec import ModelFamilyError, load_model
from modules.sma import KOHYA_FILE, MotionDirectorModule, SpectralConfig, VMCModule, radial_average

CLIP = "samples/pan_astronaut.mp4"
PROMPT = "a photo, panning"


@pytest.fixture(scope="module")
def batch():
    item = ClipDataset(CLIP, prompt=PROMPT, num_frames=4, height=16, width=16)[0]
    return {"pixel_values": item["pixel_values"][None], "prompt": [PROMPT], "index": torch.tensor([0])}


def trainable(module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def fit(module, iterations: int, root, ckpt_path=None, **trainer_kw):
    """`iterations` training iterations on the bundled pan (4 frames of 16×16: fast; no validation);
    per-iteration logged metrics."""
    seen = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    per_iter = 1 if module.automatic_optimization else 2
    dm = ClipDataModule(CLIP, prompt=PROMPT, num_frames=4, height=16, width=16, steps_per_epoch=iterations)
    trainer = L.Trainer(accelerator="cpu", max_steps=iterations * per_iter, max_epochs=-1, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(root), callbacks=[Record()], **trainer_kw)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    return trainer, seen


# -- what trains --------------------------------------------------------------------------------------
T2D = ["down_blocks.0.attentions.0", "mid_block.attentions.0", "up_blocks.1.attentions.0", "up_blocks.1.attentions.1"]
TEMP = ["down_blocks.0.temp_attentions.0", "mid_block.temp_attentions.0", "up_blocks.1.temp_attentions.0",
        "up_blocks.1.temp_attentions.1"]
ATTN = [f"transformer_blocks.0.{a}.{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0")]
FF = ["transformer_blocks.0.ff.net.0.proj", "transformer_blocks.0.ff.net.2"]
ALL_LINEAR = ["proj_in", "proj_out", *ATTN, *FF]


def lora_names(paths, linears, adapter):
    return {f"video_unet.{p}.{lin}.lora_{ab}.{adapter}.weight" for p in paths for lin in linears for ab in "AB"}


def test_vmc_trains_exactly_the_temporal_qkv_on_unet3d():
    m = VMCModule("tiny-unet3d")
    want = {f"video_unet.{p}.transformer_blocks.0.{a}.{x}.weight" for p in TEMP for a in ("attn1", "attn2")
            for x in ("to_q", "to_k", "to_v")}  # transformer_in stays frozen (released VMC)
    assert trainable(m) == want and len(want) == 24
    assert all(p.dtype == torch.float32 for n, p in m.named_parameters() if n in want)


@pytest.mark.parametrize("targets", ["released", "paper"])
def test_motiondirector_adapters_on_unet3d(targets):
    m = MotionDirectorModule("tiny-unet3d", rank=4, lora_targets=targets)
    if targets == "released":  # every Linear of the spatial and temporal transformers, transformer_in too
        spatial = lora_names(T2D, ALL_LINEAR, "spatial")
        temporal = lora_names(TEMP + ["transformer_in"], ALL_LINEAR, "temporal")
    else:  # paper: spatial attn1 + ff; temporal attn1 + attn2 + ff of temp_attentions
        spatial = lora_names(T2D, [a for a in ATTN if "attn1" in a] + FF, "spatial")
        temporal = lora_names(TEMP, ATTN + FF, "temporal")
    assert trainable(m) == spatial | temporal
    assert {f"video_unet.{n}" for n, p in m.spec.network.named_parameters() if p in set(m.lora_params["spatial"])} == spatial
    assert m.hparams.rank == 4 and all(p.dtype == torch.float32 for ps in m.lora_params.values() for p in ps)


def test_both_hosts_on_the_inflated_sd_unet(batch):
    v = VMCModule("tiny-sd")
    temporal = re.compile(r"video_unet\.unet\..*\.transformer_blocks\.\d+\.temporal\.attn_temp\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)")
    blocks = sum(1 for n, _ in v.spec.model.transformer_blocks())
    names = trainable(v)
    assert all(temporal.fullmatch(n) for n in names) and len(names) == blocks * 5  # q, k, v, out weight + out bias
    # the output projection is zero-initialised: it is what lets gradients reach q/k/v at all
    loss = v.training_step(batch, 0)
    loss.backward()
    grads = {n: p.grad for n, p in v.named_parameters() if p.requires_grad}
    assert all(grads[n].abs().sum() > 0 for n in names if "to_out" in n)
    m = MotionDirectorModule("tiny-sd", rank=4)
    t, s = ({n for n in trainable(m) if f".{a}." in n} for a in ("temporal", "spatial"))
    assert t | s == trainable(m) and t and s
    assert all(".temporal.attn_temp." in n for n in t) and not any(".temporal.attn_temp." in n for n in s)
    assert all(".attentions." in n for n in s)


def test_other_families_are_refused():
    with pytest.raises(ModelFamilyError, match="'sdxl' model.*families \\('unet3d', 'sd'\\)"):
        VMCModule("tiny-sdxl")


# -- the losses ---------------------------------------------------------------------------------------
def test_vmc_loss_is_align_and_sma_adds_the_weighted_terms(batch):
    base, sma = VMCModule("tiny-unet3d", sma=False), VMCModule("tiny-unet3d", sma=True)
    l_base, l_sma = base.training_step(batch, 0), sma.training_step(batch, 0)
    z0 = base.latents(batch)
    _, aux = base.diffusion_loss(z0, base.conditioning([PROMPT], (16, 16)))  # the same iteration-keyed draw
    t = base.motion_terms(aux, align=True)
    assert l_base.item() == pytest.approx(t["align"].item(), rel=1e-5)
    assert l_sma.item() == pytest.approx((t["align"] + 0.4 * t["global"] + 0.2 * t["local"]).item(), rel=1e-5)
    assert l_sma.requires_grad and l_sma.item() > l_base.item()


def test_fewer_than_three_frames_is_a_clear_error(batch):
    short = {**batch, "pixel_values": batch["pixel_values"][:, :, :2]}
    with pytest.raises(MotionLossError, match="at least 3 frames"):
        VMCModule("tiny-unet3d").training_step(short, 0)


def test_motiondirector_loss_terms_and_both_optimisers(tmp_path):
    runs = {}
    for sma in (False, True):
        m = MotionDirectorModule("tiny-unet3d", rank=4, sma=sma, spatial_prob=1.0)
        before = {k: [p.detach().clone() for p in ps] for k, ps in m.lora_params.items()}
        trainer, seen = fit(m, 1, tmp_path / str(sma))
        runs[sma] = seen[0]
        assert trainer.global_step == 2  # one iteration, both optimisers stepped
        for k in before:  # both adapters moved (lora_B starts at zero)
            assert any(not torch.equal(a, p) for a, p in zip(before[k], m.lora_params[k])), k
    for sma, r in runs.items():
        host = r["train/temporal_mse"] + r["train/appearance_debiased"]
        extra = r["train/align"] + 0.4 * r["train/global"] + 0.2 * r["train/local"]
        assert r["train/loss"] == pytest.approx(host + (extra if sma else 0.0), rel=1e-5)
        assert r["train/spatial_step"] == 1.0 and r["train/spatial_mse"] > 0
    assert runs[True]["train/temporal_mse"] == pytest.approx(runs[False]["train/temporal_mse"], rel=1e-6)


def test_without_a_spatial_step_the_spatial_lora_stays_put(tmp_path):
    m = MotionDirectorModule("tiny-unet3d", rank=4, spatial_prob=0.0)
    before = [p.detach().clone() for p in m.lora_params["spatial"]]
    trainer, seen = fit(m, 2, tmp_path)
    assert trainer.global_step == 4  # the spatial optimiser still steps (a no-op): global_step = 2 × iterations
    assert all(torch.equal(a, p) for a, p in zip(before, m.lora_params["spatial"]))
    assert all(r["train/spatial_step"] == 0.0 and "train/spatial_mse" not in r for r in seen)


def test_resume_replays_noise_coins_frames_and_dropout(tmp_path):
    kw = dict(rank=4, spatial_prob=0.5, seed=3)
    straight = MotionDirectorModule("tiny-unet3d", **kw)
    _, seen = fit(straight, 3, tmp_path / "a")
    assert {r["train/spatial_step"] for r in seen} == {0.0, 1.0}  # the coin came up both ways
    first = MotionDirectorModule("tiny-unet3d", **kw)
    trainer, _ = fit(first, 1, tmp_path / "b")
    ckpt = tmp_path / "b.ckpt"
    trainer.save_checkpoint(ckpt)
    assert set(torch.load(ckpt, weights_only=True)["state_dict"]) == trainable(first)
    resumed = MotionDirectorModule("tiny-unet3d", **kw)
    trainer, _ = fit(resumed, 3, tmp_path / "c", ckpt_path=str(ckpt))
    assert resumed.train_iteration == 3 and trainer.global_step == 6
    for k in ("spatial", "temporal"):
        assert all(torch.equal(a, b) for a, b in zip(straight.lora_params[k], resumed.lora_params[k])), k


def test_lora_dropout_stays_on_in_training_after_a_validation(tmp_path):
    modes = []

    class Dropout(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            modes.append({d.training for d in pl_module._lora_dropouts})

    m = MotionDirectorModule("tiny-unet3d", rank=4, edit=EditConfig(num_inference_steps=1, reconstruct=False,
                                                                    edit_prompts=["a photo of a cat"]))
    dm = ClipDataModule(CLIP, prompt=PROMPT, num_frames=4, height=16, width=16, steps_per_epoch=1)
    trainer = L.Trainer(accelerator="cpu", max_steps=4, max_epochs=-1, limit_val_batches=1, num_sanity_val_steps=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path), callbacks=[Dropout()])
    trainer.fit(m, datamodule=dm)  # one iteration per epoch: validation between the two iterations
    assert isinstance(m.last_edit.edits["a photo of a cat"], torch.Tensor) and len(modes) == 4
    assert modes == [{True}] * 4  # dropout 0.1 on in every step: Lightning restores module modes after validation


def test_trainer_gradient_clipping_is_refused_under_manual_optimisation(tmp_path):
    with pytest.raises(ValueError, match="remove trainer.gradient_clip_val.*model.init_args.grad_clip"):
        fit(MotionDirectorModule("tiny-unet3d", rank=4), 1, tmp_path, gradient_clip_val=1.0)


# -- inference and exports ------------------------------------------------------------------------------
def perturb(params, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def probe(spec):
    g = torch.Generator().manual_seed(0)
    z = torch.randn((1, *spec.latent_shape(4, 16, 16)), generator=g)
    return z, torch.tensor([400]), spec.encode_prompt(["a photo of a cat"])


def test_vmc_named_tensors_load_back_into_a_fresh_base(tmp_path):
    m = VMCModule("tiny-unet3d").eval()
    perturb([p for p in m.parameters() if p.requires_grad], 1)
    out = write_export(m, tmp_path / "export", "named-tensors", step=7)
    z, t, cond = probe(m.spec)
    with torch.no_grad():
        want = m.spec(z, t, cond)
    fresh = load_model("tiny-unet3d")
    with torch.no_grad():
        assert not torch.allclose(fresh(z, t, cond), want, atol=1e-4)
    meta = load_named_tensors(fresh.network, out, checksum=fresh.checksum())
    assert meta["step"] == 7 and len(meta["names"]) == 24
    with torch.no_grad():
        assert torch.allclose(fresh(z, t, cond), want, atol=1e-6)


def test_motiondirector_exports_load_in_diffusers_with_the_temporal_lora_only(tmp_path):
    from diffusers import TextToVideoSDPipeline

    m = MotionDirectorModule("tiny-unet3d", rank=4).eval()
    for k, ps in m.lora_params.items():
        perturb(ps, 2 if k == "spatial" else 3)
    z, t, cond = probe(m.spec)
    with torch.no_grad():
        with m.inference_adapters():
            infer = m.spec(z, t, cond)
        both = m.spec(z, t, cond)
        spatial_off = copy.deepcopy(m)
        for p in spatial_off.lora_params["spatial"]:
            p.zero_()
        assert torch.allclose(spatial_off.spec(z, t, cond), infer, atol=1e-6)  # inference = temporal LoRA only
    assert not torch.allclose(both, infer, atol=1e-4)
    for fmt in m.export_formats():
        write_export(m, tmp_path / fmt, fmt, step=5)
    fresh = load_model("tiny-unet3d")
    pipe = TextToVideoSDPipeline(vae=fresh.vae, text_encoder=fresh.text_encoders[0], tokenizer=fresh.tokenizers[0],
                                 unet=fresh.unet, scheduler=fresh.scheduler)
    pipe.load_lora_weights(tmp_path / "diffusers-lora")  # diffusers' own loader, on the family's UNet class
    with torch.no_grad():
        assert torch.allclose(pipe.unet(z, t, encoder_hidden_states=cond["encoder_hidden_states"]).sample, infer,
                              atol=1e-5)
    # the spatial adapter travels apart; another base or rank is refused
    other = load_model("tiny-unet3d")
    meta = load_diffusers_lora(other.network, tmp_path / "diffusers-lora-spatial", checksum=other.checksum(), rank=4)
    assert meta["adapter"] == "spatial"
    with pytest.raises(LoraMismatchError, match="checksum"):
        load_diffusers_lora(other.network, tmp_path / "diffusers-lora", checksum="0000000000000000")
    with pytest.raises(LoraMismatchError, match="rank 4, but rank 32"):
        load_diffusers_lora(other.network, tmp_path / "diffusers-lora", rank=32)
    # kohya keys: a loader that maps `lora_unet_<module path with _>` back by the model's own module names
    # (as ComfyUI does for diffusers-named UNets) rebuilds the temporal LoRA's weight deltas
    kohya = load_file(tmp_path / "kohya-lora" / KOHYA_FILE)
    by_key = {f"lora_unet_{n.replace('.', '_')}": n for n, _ in m.spec.network.named_modules()}
    mods = dict(m.spec.network.named_modules())
    downs = [k for k in kohya if k.endswith(".lora_down.weight")]
    assert len(downs) == len(m.lora_params["temporal"]) // 2
    for k in downs:
        name = by_key[k.split(".")[0]]
        alpha, rank = kohya[k.replace("lora_down.weight", "alpha")].item(), kohya[k].shape[0]
        delta = kohya[k.replace("lora_down", "lora_up")] @ kohya[k] * (alpha / rank)
        assert torch.allclose(delta, mods[name].get_delta_weight("temporal"), atol=1e-6), name


# -- recipes ------------------------------------------------------------------------------------------
RECIPES = sorted((Path(__file__).resolve().parents[1] / "configs" / "sma").glob("*.yaml"))


def test_recipes_are_twins_and_instantiate_on_the_tiny_preset():
    import importlib

    import yaml

    from modules.editing import EditConfig

    names = {p.stem for p in RECIPES}
    assert names == {f"{h}_{s}{t}" for h in ("vmc", "motiondirector") for s in ("tiny", "zeroscope") for t in ("", "_no_sma")}
    for p in RECIPES:
        cfg = yaml.safe_load(p.read_text())
        twin = yaml.safe_load(p.with_name(p.stem.replace("_no_sma", "") + ".yaml").read_text())
        assert cfg["model"]["init_args"]["sma"] is ("_no_sma" not in p.stem)
        assert {**cfg["model"]["init_args"], "sma": True} == twin["model"]["init_args"]  # only the switch differs
        mod, cls = cfg["model"]["class_path"].rsplit(".", 1)
        args = dict(cfg["model"]["init_args"])
        args.update(model="tiny-unet3d", edit=EditConfig(**args["edit"]), spectral=SpectralConfig(**args["spectral"]))
        m = getattr(importlib.import_module(mod), cls)(**args)
        assert trainable(m)
        if "zeroscope" in p.stem:
            assert cfg["trainer"]["precision"] == "bf16-mixed" and args["gradient_checkpointing"]
            assert args["base_dtype"] == "bfloat16" and cfg["model"]["init_args"]["model"] == "models/zeroscope_v2_576w"
            assert m.video_unet.is_gradient_checkpointing
        if cls == "MotionDirectorModule":
            assert "gradient_clip_val" not in cfg["trainer"]


def run_recipe(recipe: str, root: Path, steps: int) -> str:
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    args = ["fit", "-c", str(repo / "configs/sma" / recipe), "--trainer.max_steps", str(steps),
            "--data.init_args.steps_per_epoch", "2", "--data.init_args.num_frames", "4", "--data.init_args.height", "16",
            "--data.init_args.width", "16", "--model.init_args.edit.num_inference_steps", "2",
            "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", ".",
            "--trainer.log_every_n_steps", "1", "--trainer.default_root_dir", str(root)]
    proc = subprocess.run([sys.executable, "-m", "train", *args], cwd=root.parent, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def logged(root: Path) -> list[dict]:
    import csv

    (path,) = root.rglob("metrics.csv")
    return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(path.open())]


def test_vmc_tiny_recipe_end_to_end(tmp_path):
    root = tmp_path / "vmc"
    out = run_recipe("vmc_tiny.yaml", root, steps=2)
    assert "[export]" in out and "[checkpoint]" in out
    state = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert len(state) == 24 and all(".temp_attentions." in k for k in state)
    assert (root / "export" / "tensors.safetensors").is_file()
    assert (root / "videos" / "step000002_edit_a_photo_of_a_cat_panning.mp4").is_file()
    assert (root / "plots" / "motion_spectra_step000002.png").stat().st_size > 5000
    rows = [r for r in logged(root) if "train/loss" in r]
    assert len(rows) == 2 and all({"train/align", "train/global", "train/local"} <= set(r) for r in rows)


def test_motiondirector_tiny_recipe_end_to_end(tmp_path):
    root = tmp_path / "md"
    out = run_recipe("motiondirector_tiny.yaml", root, steps=4)  # two iterations
    assert out.count("[export]") == 3
    ck = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    assert ck["global_step"] == 4 and ck["train_iteration"] == 2
    assert {k.split(".lora_")[1].split(".")[1] for k in ck["state_dict"]} == {"spatial", "temporal"}
    for folder, f in [("export", "pytorch_lora_weights.safetensors"), ("export-diffusers-lora-spatial",
                      "pytorch_lora_weights.safetensors"), ("export-kohya-lora", KOHYA_FILE)]:
        assert (root / folder / f).is_file()
    assert (root / "videos" / "step000004_edit_a_photo_of_a_cat_panning.mp4").is_file()
    rows = [r for r in logged(root) if "train/loss" in r]
    assert len(rows) == 2 and all({"train/temporal_mse", "train/appearance_debiased", "train/align"} <= set(r) for r in rows)


def test_motion_spectra_compare_reference_and_prediction(batch):
    amp = torch.zeros(8, 6)
    amp[4, 3], amp[4, 4], amp[0, 0] = 5.0, 2.0, 1.0  # zero frequency at (4, 3) after fftshift
    r = radial_average(amp)
    assert r[0] == 5.0 and r[1] == pytest.approx(2.0 / 8) and len(r) == 6  # ring 1: 8 cells (√2 rounds to 1); corner: 5
    spectra = VMCModule("tiny-unet3d").motion_spectra(batch)
    assert spectra["true"].shape == spectra["pred"].shape == (8, 8)  # latent h, w of 16×16 pixels
    assert len(spectra["radial_true"]) == 7 and torch.isfinite(spectra["radial_pred"]).all()
    assert not torch.allclose(spectra["true"], spectra["pred"])


def test_hosts_tune_and_sample_with_the_base_models_recorded_noise_prior(tmp_path):
    """A base whose model_index.json records frame-correlated ("mixed") training noise, as the tiny
    video world does, is tuned with that noise and sampled from it; a base without the record keeps
    white noise."""
    import json
    import shutil

    from modules.models.loading import resolve_model_path
    from modules.video_world import MixedNoise

    folder = tmp_path / "mixed-base"
    shutil.copytree(resolve_model_path("tiny-unet3d"), folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["training"] = {"noise": "mixed", "noise_rho": 0.5}
    (folder / "model_index.json").write_text(json.dumps(index))
    for cls in (VMCModule, MotionDirectorModule):
        mixed, white = cls(model=str(folder), seed=0), cls(model="tiny-unet3d", seed=0)
        assert [type(c) for c in mixed.sampling_callbacks] == [MixedNoise] and white.sampling_callbacks == []
        z = mixed.sample_noise(torch.zeros(64, 1, 8, 4, 4))
        zw = white.sample_noise(torch.zeros(64, 1, 8, 4, 4))
        corr = lambda x: torch.corrcoef(torch.stack([x[:, :, 0].flatten(), x[:, :, 5].flatten()]))[0, 1]  # noqa: E731
        assert 0.4 < corr(z) < 0.6 and abs(corr(zw)) < 0.1  # ρ = 0.5 between frames vs none
        assert 0.9 < z.std() < 1.1


def test_noise_prior_mixes_the_inverted_clip_with_prior_shaped_noise_and_leaves_z_T_alone(tmp_path, batch):
    """With noise_prior p the transfer starts from √p·z_T + √(1−p)·ε where only ε takes the base's
    frame-correlated prior: at p = 1 the sampling loop starts from exactly the inverted z_T (the
    MixedNoise callback must not mix it again); at p = 0 from the mixed noise."""
    import json
    import shutil

    from modules.editing import EditConfig
    from modules.models.loading import resolve_model_path
    from modules.sampling import SamplingCallback
    from modules.video_world import mix_frames

    folder = tmp_path / "mixed-base"
    shutil.copytree(resolve_model_path("tiny-unet3d"), folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["training"] = {"noise": "mixed", "noise_rho": 0.5}
    (folder / "model_index.json").write_text(json.dumps(index))

    class Record(SamplingCallback):
        def __init__(self):
            self.starts = []

        def initial_noise(self, state, z):
            if state.extras.get("label") == "generate":
                self.starts.append(z.detach().clone())
            return z

    edit = EditConfig(edit_prompts=["a photo of a dog"], num_inference_steps=2, guidance_scale=1.0, reconstruct=False)
    for p in (1.0, 0.0):
        m = MotionDirectorModule(model=str(folder), seed=0, noise_prior=p, edit=edit).eval()
        rec = Record()
        m.sampling_callbacks.append(rec)
        res = m.edit_batch(batch)
        assert len(rec.starts) == 1
        if p == 1.0:
            assert torch.allclose(rec.starts[0].float(), res.inversion.z.float().cpu(), atol=1e-6)
        else:
            g = torch.Generator().manual_seed(0)
            white = torch.randn(rec.starts[0].shape, generator=g)
            assert torch.allclose(rec.starts[0].float(), mix_frames(white, 0.5), atol=1e-6)
