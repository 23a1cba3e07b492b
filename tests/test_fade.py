"""FADE (METHODS.md §6) on the tiny CogVideoX: the low-pass in both FFT modes, the early-stopped
gradient and reference passes (equal to the full pass, also under gradient checkpointing), the
guidance lowering the low-frequency spectral distance to the source, mask blending, bad input, and
the recipe / docs command."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modules.callbacks.fade import FADEGuidance
from modules.editing import EditConfig, edit_clip
from modules.fade import (FADEConfigError, SketchFeatures, block_spectra, box_mask, energy, low_pass,
                          spectral_distance)
from modules.models.spec import VideoSizeError, load_model

ROOT = Path(__file__).resolve().parents[1]
SOURCE, EDIT = "a photo of a cup of coffee", "a photo of a cup of tea"


@pytest.fixture(scope="module")
def spec():
    return load_model("tiny-cogvideox")


@pytest.fixture(scope="module")
def clip():
    from data.clip_dataset import ClipDataset

    ds = ClipDataset(str(ROOT / "data/samples/zoom_coffee_12f.mp4"), prompt=SOURCE, num_frames=9, height=32, width=32)
    return ds[0]["pixel_values"][None]


def edit_script():
    import importlib.util

    spec_ = importlib.util.spec_from_file_location("vidtune_edit_script_fade", ROOT / "scripts/edit.py")
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    return mod


def edit_cfg(steps=10, **kw):
    return EditConfig(edit_prompts=[EDIT], num_inference_steps=steps, guidance_scale=6.0, inversion_prompt="",
                      reconstruct=False, **kw)


def latents(spec, frames=17, seed=0):
    c, f, h, w = spec.latent_shape(frames, 32, 32)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, c, f, h, w, generator=g), torch.randn(1, c, f, h, w, generator=g)


# -- the low-pass ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fft", ["3d", "2d"])
def test_low_pass_keeps_low_and_removes_high_frequencies(fft):
    grid = (6, 6, 6)
    f, h, w = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in grid), indexing="ij")
    low = torch.cos(2 * torch.pi * (f + h + w) / 6)  # frequency 1 on every axis: inside the 2/3 box
    high = torch.cos(torch.pi * (f + h + w))  # Nyquist on every axis: outside it
    x = torch.stack([low, high], -1).reshape(1, -1, 2)
    y = low_pass(x, grid, keep=2 / 3, fft=fft)
    assert torch.allclose(y[..., 0], x[..., 0], atol=1e-5)
    assert y[..., 1].abs().max() < 1e-5
    assert torch.allclose(low_pass(x, grid, keep=1.0, fft=fft), x, atol=1e-5)  # keep = 1 passes everything


def test_the_two_fft_modes_differ_only_in_time():
    grid = (6, 4, 4)
    f = torch.arange(6.0).view(6, 1, 1).expand(grid)
    x = torch.cos(torch.pi * f).reshape(1, -1, 1)  # temporal Nyquist, constant in space
    assert low_pass(x, grid, 2 / 3, "3d").abs().max() < 1e-5  # the 3-D box removes it
    assert torch.allclose(low_pass(x, grid, 2 / 3, "2d"), x, atol=1e-5)  # per-frame 2-D leaves it
    assert box_mask((3,), 2 / 3).tolist() == [1, 1, 1] and box_mask((6,), 2 / 3).tolist() == [0, 1, 1, 1, 1, 1]


# -- early stop -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fft", ["3d", "2d"])
def test_early_stopped_gradient_equals_the_full_pass(spec, fft):
    z, zr = latents(spec)
    cond = spec.encode_prompt([SOURCE], size=(32, 32))
    grid = spec.token_grid(z.shape)
    later = []  # calls of every block after the sketching ones
    hooks = [b.register_forward_hook(lambda *a: later.append(1)) for b in spec.network.transformer_blocks[2:]]
    try:
        with SketchFeatures(spec.network, 2) as sf:
            with torch.no_grad():
                ref = sf.run(spec, zr, 600, cond, stop=True)
                ref_full = sf.run(spec, zr, 600, cond, stop=False)
            assert all(torch.equal(a, b) for a, b in zip(ref, ref_full))
            grads = {}
            for stop in (True, False):
                later.clear()
                zz = z.clone().requires_grad_(True)
                with torch.enable_grad():
                    g = energy(sf.run(spec, zz, 600, cond, stop=stop), ref, grid, 2 / 3, fft)
                grads[stop] = torch.autograd.grad(g, zz)[0]
                assert len(later) == (0 if stop else 2)  # the early-stopped pass runs no later block
    finally:
        for h in hooks:
            h.remove()
    assert grads[True].abs().max() > 0
    assert torch.equal(grads[True], grads[False])


def test_gradient_checkpointing_recomputes_blocks_but_features_are_captured_once(spec):
    z, zr = latents(spec, frames=9)
    cond = spec.encode_prompt([SOURCE], size=(32, 32))
    grid = spec.token_grid(z.shape)
    with SketchFeatures(spec.network, 3) as sf:
        with torch.no_grad():
            ref = sf.run(spec, zr, 400, cond)
        zz = z.clone().requires_grad_(True)
        plain = torch.autograd.grad(energy(sf.run(spec, zz, 400, cond), ref, grid), zz)[0]
        spec.network.enable_gradient_checkpointing()
        try:
            for stop in (True, False):
                sf.calls = 0
                zz = z.clone().requires_grad_(True)
                with torch.enable_grad():
                    g = energy(sf.run(spec, zz, 400, cond, stop=stop), ref, grid)
                    assert sf.calls == 3
                    ckpt = torch.autograd.grad(g, zz)[0]
                assert sf.calls > 3  # the hooks fired again while backward recomputed the blocks
                assert torch.equal(ckpt, plain)
        finally:
            spec.network.disable_gradient_checkpointing()


# -- the edit -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fft", ["3d", "2d"])
def test_guidance_lowers_the_low_frequency_spectral_distance(spec, clip, fft):
    """17 frames (the clip played forth and back): 5 latent frames, so the 3-D box also cuts in time."""
    pingpong = torch.cat([clip, clip.flip(2)[:, :, 1:]], dim=2)
    runs = {}
    for scale in (0.0, 5000.0):
        cb = FADEGuidance(n_sketch=2, fft=fft, scale=scale)
        res = edit_clip(spec, pingpong, SOURCE, edit_cfg(), [cb], progress=False)
        final = spectral_distance(spec, cb.latents[-1], res.inversion.trajectory[0], res.inversion.cond,
                                  res.inversion.timesteps[0], n_sketch=2, fft=fft)
        runs[scale] = (cb.mean_energy(), final, cb.records)
    (e0, d0, rec0), (e1, d1, rec1) = runs[0.0], runs[5000.0]
    assert len(rec1) == 6 and [r["step"] for r in rec1] == list(range(6))  # first 60% of 10 steps
    assert rec1[0]["energy"] == 0 and rec1[0]["applied_norm"] == 0  # z_T is the inverted latent: no gradient
    assert all(0.33 - 1e-4 <= r["applied_norm"] / r["cfg_norm"] <= 3 + 1e-4 for r in rec1[1:])
    assert e1 < 0.7 * e0, (e0, e1)  # G_t along the guided steps
    assert d1 < d0, (d0, d1)  # and on the final latents (re-encoded edit vs source)


def test_no_extra_passes_outside_the_window(spec, clip):
    calls = []
    h = spec.network.transformer_blocks[0].register_forward_hook(lambda m, a, o: calls.append(o[0].shape[0]))
    try:
        edit_clip(spec, clip, SOURCE, edit_cfg(steps=10), [FADEGuidance(n_sketch=2, stop=0.3)], progress=False)
    finally:
        h.remove()
    # 10 inversion passes (batch 1), 10 CFG passes (batch 2), 2 passes (reference, gradient) in each of 3 steps
    assert calls.count(2) == 10 and calls.count(1) == 10 + 2 * 3


def test_mask_blending_keeps_the_source_outside_the_mask(spec, clip):
    cfg = edit_cfg(steps=6)
    zero = FADEGuidance(n_sketch=2, mask=torch.zeros(9, 32, 32), mask_stop=1.0)
    res = edit_clip(spec, clip, SOURCE, cfg, [zero], progress=False)
    assert torch.allclose(res.edits[EDIT], spec.decode(res.inversion.trajectory[0]).float(), atol=1e-6)
    ones = edit_clip(spec, clip, SOURCE, cfg, [FADEGuidance(n_sketch=2, mask=torch.ones(9, 32, 32))], progress=False)
    plain = edit_clip(spec, clip, SOURCE, cfg, [FADEGuidance(n_sketch=2)], progress=False)
    assert torch.allclose(ones.edits[EDIT], plain.edits[EDIT], atol=1e-5)  # z* + 1·(z − z*) = z up to rounding


def test_mask_pools_to_the_causal_latent_grid(spec):
    s = spec.vae_scale_factor  # 4 for the tiny VAE (CogVideoX: 8)
    m = torch.zeros(9, 32, 32)
    m[5, 9, 30] = 1  # frame 5 -> latent frame 2 (frames 5..8); pixel (9, 30) -> latent cell (9 // s, 30 // s)
    lat = FADEGuidance.pool_mask(spec, m, spec.latent_shape(9, 32, 32))
    assert lat.shape == (1, 1, 3, 32 // s, 32 // s) and lat.sum() == 1 and lat[0, 0, 2, 9 // s, 30 // s] == 1
    m.zero_()
    m[0, 0, 0] = 1  # the causal first frame is its own latent frame
    assert FADEGuidance.pool_mask(spec, m, spec.latent_shape(9, 32, 32))[0, 0, :, 0, 0].tolist() == [1, 0, 0]


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [0, -0.5, 1.5])
def test_keep_outside_the_unit_interval_is_refused(keep):
    with pytest.raises(FADEConfigError, match=r"keep must be in \(0, 1\]"):
        FADEGuidance(keep=keep)


def test_bad_settings_are_refused_before_the_inversion(spec, clip):
    calls = []
    h = spec.network.transformer_blocks[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(FADEConfigError, match=r"n_sketch=4 but this transformer has 4 blocks.*n_sketch <= 3"):
            edit_clip(spec, clip, SOURCE, edit_cfg(), [FADEGuidance(n_sketch=4)], progress=False)
        with pytest.raises(FADEConfigError, match=r"mask has shape \(8, 32, 32\).*\(9, 32, 32\)"):
            edit_clip(spec, clip, SOURCE, edit_cfg(), [FADEGuidance(n_sketch=2, mask=torch.ones(8, 32, 32))], progress=False)
        with pytest.raises(VideoSizeError, match=r"13 frames.*8k\+1.*9 or 17 frames"):
            edit_clip(spec, torch.zeros(1, 3, 13, 32, 32), SOURCE, edit_cfg(), [FADEGuidance(n_sketch=2)])
    finally:
        h.remove()
    assert not calls
    with pytest.raises(FADEConfigError, match="fft must be '3d'"):
        FADEGuidance(fft="3D")


# -- spectra, recipe, docs -----------------------------------------------------------------------
def test_block_spectra_are_energy_shares(spec):
    z, _ = latents(spec, frames=9)
    cond = spec.encode_prompt([SOURCE], size=(32, 32))
    out = block_spectra(spec, spec.network, z, 500, cond, spec.token_grid(z.shape), bins=8)
    assert out["radial"].shape == (4, 8) and torch.allclose(out["radial"].sum(1), torch.ones(4), atol=1e-5)
    assert all(0 < s <= 1 for s in out["low_share"])


def test_docs_tiny_command_runs(tmp_path):
    doc = (ROOT / "docs/fade.md").read_text()
    cmd = re.search(r"^python -m train predict -c configs/fade/tiny\.yaml.*$", doc, re.M).group(0)
    run = tmp_path / "run"
    args = cmd.split()[1:] + ["--trainer.default_root_dir", str(run), "--model.init_args.edit.num_inference_steps", "5"]
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    videos = {p.name for p in (run / "videos").iterdir()}
    assert {"predict_edit_a_photo_of_a_cup_of_tea.mp4", "predict_side_by_side.mp4", "predict_fade.json"} <= videos


def test_a_trainer_in_inference_mode_is_refused(tmp_path):
    import lightning as L

    from modules.zero_shot import ZeroShotModule

    module = ZeroShotModule(model="tiny-cogvideox")
    cb = FADEGuidance(n_sketch=2)
    with pytest.raises(FADEConfigError, match="inference_mode: false"):
        cb.setup(L.Trainer(inference_mode=True, logger=False, default_root_dir=tmp_path), module, "predict")
    cb.setup(L.Trainer(inference_mode=False, logger=False, default_root_dir=tmp_path), module, "predict")
    assert module.sampling_callbacks == [cb]
    with pytest.raises(FADEConfigError, match="n_sketch=4 but this transformer has 4 blocks"):
        FADEGuidance(n_sketch=4).setup(L.Trainer(inference_mode=False, logger=False), module, "predict")


def test_edit_script_with_fade_reports_both_edits(tmp_path):
    import json

    from test_metrics import tiny_tokenizer
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    clip_dir = tmp_path / "clip"
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8), projection_dim=16)).save_pretrained(clip_dir)
    tok.save_pretrained(clip_dir)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(clip_dir)
    out = tmp_path / "edit"
    edit_script().main(["--video", str(ROOT / "data/samples/zoom_coffee_12f.mp4"), "--prompt", SOURCE, "--edit", EDIT,
                        "--model", "tiny-cogvideox", "--num-frames", "9", "--steps", "4", "--guidance", "6",
                        "--inversion", "fade", "--fade-blocks", "2", "--clip", str(clip_dir), "--out", str(out)])
    e = json.loads((out / "metrics.json").read_text())["fade"]["edits"][EDIT]
    for run in ("fade", "none"):
        assert e[run]["spectral_distance"] > 0 and -100 <= e[run]["clip_text_alignment"] <= 100
        assert 0 < e[run]["frame_consistency"] <= 100 + 1e-3
    assert e["fade"]["mean_energy_guided_steps"] < e["none"]["mean_energy_guided_steps"]
    assert (out / "fade_side_by_side.mp4").exists() and (out / "fade_unguided_side_by_side.mp4").exists()


@pytest.mark.parametrize("argv,message", [
    (["--num-frames", "8"], r"8 frames: CogVideoX.*8k\+1.*1 or 9 frames"),
    (["--num-frames", "9", "--fade-blocks", "4"], r"n_sketch=4 but this transformer has 4 blocks"),
    (["--num-frames", "9", "--fade-keep", "1.5"], r"keep must be in \(0, 1\]"),
])
def test_edit_script_refuses_bad_fade_input(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        edit_script().main(["--video", str(ROOT / "data/samples/zoom_coffee_12f.mp4"), "--prompt", SOURCE, "--edit",
                            EDIT, "--model", "tiny-cogvideox", "--inversion", "fade", *argv, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and re.search(message, err), err


def test_spectra_tool_writes_the_plot(tmp_path):
    import importlib.util

    out = tmp_path / "spectra.png"
    spec_ = importlib.util.spec_from_file_location("fade_spectra_script", ROOT / "scripts/fade_spectra.py")
    tool = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(tool)
    assert tool.main(["--video", str(ROOT / "data/samples/zoom_coffee_12f.mp4"), "--prompt", SOURCE,
                      "--num-frames", "9", "--out", str(out)]) == 0
    import json

    data = json.loads(out.with_suffix(".json").read_text())
    assert out.stat().st_size > 5000 and len(data["low_share"]) == 4 and len(data["radial"][0]) == 12


@pytest.mark.slow  # two worker processes (memory per variant): ~30 s; pytest -m slow tests/test_fade.py
def test_benchmark_harness_writes_the_json(tmp_path):
    import json

    sys.path.insert(0, str(ROOT / "scripts"))
    from bench.fade import run

    run(tmp_path, frames=(2,), size=16, heads=1, steps=2, rounds=1)
    res = json.loads((tmp_path / "fade.json").read_text())
    assert {"fade_s", "plain_s", "ratio", "peak_mem_fade", "peak_mem_plain"} <= set(res)
    saved = res["frames"]["2"]["saved_for_backward_mb"]
    assert saved["early_stop"] < saved["full_pass"]
    assert (tmp_path / "fade.md").read_text().startswith("# FADE vs plain CFG editing")
