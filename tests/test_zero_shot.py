"""Zero-shot jobs: every model family through the one loop (inversion, reconstruction, edit, and
sampling from noise), and `python -m train predict -c configs/stem/tiny.yaml` end to end."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modules.editing import EditConfig, edit_clip, generate
from modules.models.spec import load_model

ROOT = Path(__file__).resolve().parents[1]
FAMILY_CLIPS = {"tiny-sd": 8, "tiny-world": 8, "tiny-sdxl": 8, "tiny-unet3d": 8, "tiny-cogvideox": 9}


@pytest.mark.parametrize("preset", list(FAMILY_CLIPS))
def test_edit_and_generate_on_every_family(preset):
    spec = load_model(preset)
    frames = FAMILY_CLIPS[preset]
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(1, 3, frames, 32, 32, generator=g) * 2 - 1
    res = edit_clip(spec, pixels, "a photo of a cat", EditConfig(edit_prompts=["a photo of a dog"],
                    num_inference_steps=3, guidance_scale=3.0), progress=False)
    assert res.reconstruction.shape == pixels.shape and res.edits["a photo of a dog"].shape == pixels.shape
    assert torch.isfinite(res.reconstruction).all() and torch.isfinite(res.inversion.z).all()
    assert len(res.inversion.trajectory) == 4
    # the edit differs from the reconstruction (another prompt, CFG 3), the inversion was not a no-op
    assert (res.edits["a photo of a dog"] - res.reconstruction).abs().mean() > 1e-4
    video = generate(spec, ["a photo of a cat", "a photo of a dog"], frames, 32, 32, num_inference_steps=2,
                     guidance_scale=2.0, progress=False)
    assert video.shape == (2, 3, frames, 32, 32) and torch.isfinite(video).all()
    assert (video[0] - video[1]).abs().mean() > 1e-4  # the prompt reaches the sample


def test_inversion_reconstructs_the_world_clip_closely():
    """On the trained pixel world, 20-step DDIM inversion + CFG-1 reconstruction through the spec
    and the loop keeps the clip (PSNR > 25 dB on every frame)."""
    from data.clip_dataset import ClipDataset
    from modules import metrics
    from data.video_io import to_frames

    spec = load_model("tiny-world")
    ds = ClipDataset("samples/pan_astronaut.mp4", prompt="a photo of an astronaut", num_frames=8, height=32, width=32)
    px = ds[0]["pixel_values"][None]
    res = edit_clip(spec, px, "a photo of an astronaut", EditConfig(num_inference_steps=20), progress=False)
    psnr = metrics.psnr(to_frames(px), to_frames(res.reconstruction))
    assert psnr.min() > 25, psnr


def test_predict_recipe_writes_an_edited_video(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "train", "predict", "-c", str(ROOT / "configs/stem/tiny.yaml"),
         "--trainer.default_root_dir", str(run), "--model.init_args.edit.num_inference_steps", "4"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    videos = {p.name for p in (run / "videos").glob("*.mp4")}
    assert {"predict_source.mp4", "predict_reconstruction.mp4", "predict_edit_a_photo_of_a_cat.mp4",
            "predict_side_by_side.mp4"} <= videos
    from data.video_io import read_video

    assert read_video(run / "videos" / "predict_edit_a_photo_of_a_cat.mp4").shape == (8, 32, 32, 3)
    m = json.loads((run / "videos" / "predict_metrics.json").read_text())
    assert m["recon_psnr"] > 20  # STEM inversion with K = 64 on the world at 4 steps
