"""WarpedSampling (modules/callbacks/warped.py) through warped_restore (modules/warped.py) on the tiny world
with a widened conv_in (a valid conditional model): lockstep chunks = the sequential algorithm, the
guidance term, what it does to the warping error, bad input, the predict recipe and edit.py."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from modules.callbacks.warped import WarpedSampling, WarpedSamplingError
from modules.flow import FlowError, VideoFlow
from modules.gp_finetune import RestorationInputError
from modules.metrics import reference_warping_error
from modules.warped import box_mask, load_conditional_model, warped_restore, warping_errors

ROOT = Path(__file__).resolve().parents[1]
GP = {"features": 300}
F, S = 4, 16


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Many small ops: two threads on the shared 2-core machine run ~20× slower than one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def spec():
    with pytest.warns(UserWarning, match="widened with zero weights"):
        return load_conditional_model("tiny-world", "inpainting")


@pytest.fixture(scope="module")
def clip():
    from data.photos import photo

    big = torch.from_numpy(photo("astronaut", S + F)).permute(2, 0, 1).float() / 127.5 - 1
    frames = torch.stack([big[:, 2:2 + S, F - j:F - j + S] for j in range(F)], 1)[None]  # moves right 1 px/frame
    return frames, VideoFlow.translation(F, S, S, dx=1.0), box_mask(S, S, (0.25, 0.25, 0.5, 0.5))


def run(spec, clip, steps=4, **kw):
    frames, flow, mask = clip
    cb = WarpedSampling(gp=GP, **kw)
    return warped_restore(spec, "inpainting", [""], pixels=frames, mask=mask, flow=flow, callback=cb,
                          num_inference_steps=steps), cb


def test_lockstep_chunks_equal_the_sequential_algorithm(spec, clip):
    seq, _ = run(spec, clip, frame_chunk=1)  # frame by frame: Algorithm 1 as written
    for chunk in (3, None):
        lock, cb = run(spec, clip, frame_chunk=chunk)
        assert cb.chunks(F) == ([(0, 3), (3, 4)] if chunk == 3 else [(0, 4)])
        assert torch.allclose(lock.latents, seq.latents, atol=1e-5), (lock.latents - seq.latents).abs().max()
    assert torch.allclose(lock.restored, seq.restored, atol=1e-5)


def test_guidance_term_is_the_normalised_gradient_in_ve_coordinates():
    """One step on a 2-frame chunk: the z term is −√(ᾱ ᾱ') (λ/√e) ∇_z e, frame 0 untouched, linear in λ."""
    from modules.flow import warp_tensor
    from modules.sampling import LoopState, Prediction

    flow = VideoFlow.translation(2, S, S, dx=1.0)
    a, a_next = 0.3, 0.5

    def prediction(z):  # any differentiable network: here x̂0 = 0.9 tanh(z), as an ε-prediction
        return Prediction((z - a ** 0.5 * 0.9 * torch.tanh(z)) / (1 - a) ** 0.5, z, a, "epsilon")

    terms = {}
    for lam in (1.0, 2.5):
        cb = WarpedSampling(guidance=lam, gp=GP)
        cb.begin_video(flow)
        cb.begin_chunk(0, 2)
        z = torch.randn(1, 3, 2, S, S, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        terms[lam] = cb.guidance(LoopState("sample", [999], step=0, alpha=a, alpha_next=a_next), z, prediction(z)).z
        x0 = prediction(z).x0
        w, valid = warp_tensor(x0[:, :, 1], flow.forward[:1])  # frame 1 onto frame 0's grid
        e = (((w - x0[:, :, 0].detach()) ** 2) * valid[:, None]).sum()
        (g,) = torch.autograd.grad(e, z)
        assert torch.allclose(cb.errors[-1][0, 0], e.detach())
        assert torch.allclose(terms[lam], -(a * a_next) ** 0.5 * lam / e.detach().sqrt() * g, atol=1e-6)
        assert terms[lam][:, :, 0].abs().max() == 0  # frame 0 is sampled normally
    assert torch.allclose(terms[2.5], 2.5 * terms[1.0], atol=1e-6)


def test_guidance_lowers_the_warping_error_and_lambda_zero_is_warping_alone(spec, clip):
    guided, cb = run(spec, clip, steps=8, guidance=1.0)
    alone, cb0 = run(spec, clip, steps=8, guidance=0.0, frame_chunk=1)
    assert cb.needs_grad and not cb0.needs_grad and cb0.chunks(F) == [(0, F)] and not cb0.errors
    eg, e0 = warping_errors(guided), warping_errors(alone)
    assert set(eg) == {"latent_first", "latent_previous", "pixel_first", "pixel_previous"}
    assert all(len(v) == F - 1 for v in eg.values())
    print({k: (np.mean(eg[k]), np.mean(e0[k])) for k in eg})
    assert np.mean(eg["latent_first"]) < 0.5 * np.mean(e0["latent_first"])
    # λ = 0 is plain conditional sampling from the warped noise, all frames in one batch
    from modules.gp_finetune import restore
    frames, flow, mask = clip
    ref = WarpedSampling(guidance=0.0, gp=GP)
    ref.begin_video(flow)
    direct = restore(spec, "inpainting", [""], pixels=frames, mask=mask[:, :, None].expand(-1, -1, F, -1, -1), noise=ref.noise_for((1, 3, F, S, S)),
                     num_inference_steps=8)
    assert torch.allclose(direct, alone.restored, atol=1e-6)


def test_reference_warping_error_is_zero_for_a_translated_video_and_sees_a_wrong_flow():
    g = torch.Generator().manual_seed(0)
    big = torch.randn(3, 10, 14, generator=g)
    video = torch.stack([big[:, :, 4 - j:14 - j] for j in range(5)], 1)  # (3, 5, 10, 10), right 1 px/frame
    flow = VideoFlow.translation(5, 10, 10, dx=1.0)
    for ref in ("first", "previous"):
        assert np.allclose(reference_warping_error(video, flow, ref), 0, atol=1e-12)
        assert (reference_warping_error(video, VideoFlow.translation(5, 10, 10, dx=0.0), ref) > 0.1).all()


def test_bad_input_is_refused_before_sampling(spec, clip):
    frames, flow, mask = clip
    cb = WarpedSampling(gp=GP)
    with pytest.raises(WarpedSamplingError, match="at least 2 frames"):
        warped_restore(spec, "inpainting", [""], pixels=frames[:, :, :1], mask=mask, callback=cb)
    with pytest.raises(FlowError, match="the flow is for 4 frames of 8×8"):
        warped_restore(spec, "inpainting", [""], pixels=frames, mask=mask, flow=VideoFlow.translation(F, 8, 8), callback=cb)
    nan = torch.zeros(F - 1, S, S, 2)
    nan[0, 0, 0] = float("nan")
    with pytest.raises(FlowError, match="NaN"):
        VideoFlow(nan, nan)
    with pytest.raises(RestorationInputError, match="covers no pixel"):
        warped_restore(spec, "inpainting", [""], pixels=frames, mask=torch.zeros(1, 1, S, S), callback=cb)
    with pytest.raises(WarpedSamplingError, match="noise must be one of"):
        WarpedSampling(noise="warped")
    with pytest.raises(WarpedSamplingError, match="frame_chunk"):
        WarpedSampling(frame_chunk=0)
    with pytest.raises(WarpedSamplingError, match="warped_restore"):  # used bare in a loop
        WarpedSampling().on_phase_start(__import__("modules.sampling", fromlist=["LoopState"]).LoopState("sample", []))


def test_super_resolution_with_estimated_flow(clip):
    with pytest.warns(UserWarning):
        sr = load_conditional_model("tiny-world", "super_resolution")
    frames, _, _ = clip
    from data.restoration import downsample

    low = downsample(frames.transpose(1, 2), 4).transpose(1, 2)
    res = warped_restore(sr, "super_resolution", [""], low_res=low, callback=WarpedSampling(gp=GP, flow="farneback"),
                         num_inference_steps=2)
    assert res.restored.shape == frames.shape and res.flow.size == (S, S)
    assert res.condition.shape == frames.shape  # the upsampled low-res frames


def test_predict_recipe_writes_video_side_by_side_and_plot(tmp_path):
    root = tmp_path / "run"
    cmd = [sys.executable, "-m", "train", "predict", "-c", str(ROOT / "configs/warped/inpaint_world.yaml"),
           "--model.init_args.model", "tiny-world", "--model.init_args.num_inference_steps", "2",
           "--data.init_args.num_frames", "3", "--trainer.default_root_dir", str(root)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    vids = root / "videos"
    for name in ("predict_restored.mp4", "predict_input.mp4", "predict_side_by_side.mp4", "predict_warping_error.png"):
        assert (vids / name).stat().st_size > 500, name
    m = json.loads((vids / "predict_metrics.json").read_text())
    assert m["settings"]["guidance"] == 1.0 and set(m["warping_error"]) == {"latent_first", "latent_previous",
                                                                          "pixel_first", "pixel_previous"}
    assert len(m["warping_error_per_frame"]["pixel_first"]) == 2 and "psnr" in m


def test_edit_script_task_inpainting_writes_video_and_plot(tmp_path, capsys):
    import importlib.util

    spec_ = importlib.util.spec_from_file_location("edit_script", ROOT / "scripts" / "edit.py")
    edit = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(edit)
    out = tmp_path / "out"
    args = ["--video", str(ROOT / "data/samples/pan_astronaut.mp4"), "--prompt", "an astronaut", "--task", "inpainting",
            "--model", "tiny-world", "--steps", "2", "--num-frames", "3", "--height", "16", "--width", "16"]
    with pytest.warns(UserWarning, match="widened"):
        with pytest.raises(SystemExit) as done:
            edit.main(args + ["--out", str(out)])
    assert done.value.code == 0
    for name in ("warped_restored.mp4", "warped_side_by_side.mp4", "warped_warping_error.png", "warped_metrics.json"):
        assert (out / name).stat().st_size > 300, name
    with pytest.raises(SystemExit) as bad:
        edit.main(args + ["--mask-box", "0,0,0,0", "--out", str(tmp_path / "bad")])
    assert bad.value.code == 2 and "covers no pixel" in capsys.readouterr().err


# -- docs/warped.md: its commands run as written ------------------------------------------------------------------
def doc_blocks(lang: str) -> list[str]:
    import re

    text = (ROOT / "docs" / "warped.md").read_text()
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def presets_ready() -> bool:
    """The conditional worlds of issue 12 are registered and their weights are here."""
    from modules.models.spec import PRESETS, resolve_model_path

    try:
        return all(name in PRESETS and resolve_model_path(name).is_dir() for name in ("tiny-world-inpaint", "tiny-world-sr"))
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not presets_ready(), reason="the conditional worlds (issue 12) are not committed yet")
def test_docs_python_block_runs():
    (code,) = doc_blocks("python")
    proc = subprocess.run([sys.executable, "-"], input=code, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch.Size([1, 3, 4, 32, 32])" in proc.stdout and "latent_first" in proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(not presets_ready(), reason="the conditional worlds (issue 12) are not committed yet")
def test_docs_bash_blocks_run(tmp_path):
    """The recipe and edit.py commands of docs/warped.md, as written (in a scratch copy of the tree; ~1 min)."""
    import os
    import shutil

    work = tmp_path / "tree"
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "outputs", "wandb",
                                                               "__pycache__", "*.egg-info"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for code in doc_blocks("bash"):
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=work, capture_output=True, text=True,
                              timeout=1800, env=env)
        assert proc.returncode == 0, code + proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (work / "runs/warped-inpaint-world/videos/predict_side_by_side.mp4").is_file()
    assert (work / "outputs/warped_sr/warped_warping_error.png").is_file()


@pytest.mark.parametrize("model", ["tiny-sdxl", "tiny-sd"])
def test_latent_families_sample_on_the_latent_flow(model):
    """A VAE model (factor 2 in the tiny presets): the pixel flow is pooled onto the latent grid."""
    with pytest.warns(UserWarning, match="widened"):
        spec = load_conditional_model(model, "inpainting")
    frames = torch.rand(1, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    res = warped_restore(spec, "inpainting", ["a cat"], pixels=frames, mask=box_mask(32, 32, (0.25, 0.25, 0.5, 0.5)),
                         flow=VideoFlow.translation(3, 32, 32, dx=8.0), callback=WarpedSampling(gp=GP),
                         num_inference_steps=2)
    f = spec.vae_scale_factor
    assert res.latents.shape == (1, spec.latent_channels, 3, 32 // f, 32 // f)
    assert torch.equal(res.latent_flow.forward[..., 0], torch.full((2, 32 // f, 32 // f), 8.0 / f))
    assert res.restored.shape == frames.shape and torch.isfinite(res.restored).all()


def test_benchmark_code_path_writes_the_json(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench.warped import MODES, WarpedBenchConfig, run as bench_run

    cfg = WarpedBenchConfig(model="tiny-world", frames=3, size=16, steps=2, seeds=[0, 1], features=50, memory_steps=1)
    res = bench_run(cfg, tmp_path)
    data = json.loads((tmp_path / "warped.json").read_text())
    assert set(data["modes"]) == set(MODES)
    for m in MODES:
        assert {"warp_error", "per_seed", "psnr"} <= set(data["modes"][m]) and len(data["modes"][m]["per_seed"]) == 2
    assert len(data["guidance_overhead"]["per_round"]) == 2 and data["memory_overhead"]["ratio"] > 0
    assert (tmp_path / "warped.md").read_text().startswith("# Warped sampling benchmark")
    assert (tmp_path / "warped_per_frame.png").stat().st_size > 1000 and set(res["met"]) == set(data["targets"])


@pytest.mark.parametrize("recipe,task", [("inpaint_world", "inpainting"), ("sr_world", "super_resolution")])
def test_recipes_instantiate_on_the_tiny_world(recipe, task):
    sys.path.insert(0, str(ROOT / "tests"))
    from test_cli import recipe_parser

    parser = recipe_parser()
    cfg = parser.parse_path(str(ROOT / f"configs/warped/{recipe}.yaml"))
    assert cfg.model.init_args.model == ("tiny-world-inpaint" if task == "inpainting" else "tiny-world-sr")
    assert cfg.trainer.inference_mode is False  # the guidance differentiates through the network
    if not presets_ready():
        cfg.model.init_args.model = "tiny-world"
    with pytest.warns(UserWarning) if not presets_ready() else __import__("contextlib").nullcontext():
        init = parser.instantiate_classes(cfg)
    module, (cb,) = init.model, init.trainer.callbacks
    assert module.task == task and module.spec.in_channels == (7 if task == "inpainting" else 6)
    assert isinstance(cb, WarpedSampling) and cb.guidance_scale == 1.0 and cb.frame_chunk == 4 and cb.noise == "gp"
