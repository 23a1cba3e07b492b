"""STEM over a long clip: 120 frames at 256×256 invert with bases over all frames (slow)."""
import resource

import numpy as np
import pytest
import torch

from data.clip_dataset import ClipDataset
from data.photos import photo
from data.video_io import write_video
from modules.callbacks.stem import STEMInversion
from modules.editing import EditConfig, edit_clip
from modules.models.spec import load_model


@pytest.mark.slow
def test_120_frames_256px_invert_with_stem(tmp_path):
    big = photo("coffee", 400)
    frames = np.stack([big[40:296, 10 + i:266 + i] for i in range(120)])  # 1 px/frame pan
    path = write_video(tmp_path / "long.mp4", frames, fps=24)
    clip = ClipDataset(str(path), prompt="a photo of a cup of coffee", num_frames=120, height=256, width=256)
    pixels = clip[0]["pixel_values"][None]
    assert pixels.shape == (1, 3, 120, 256, 256)
    spec = load_model("tiny-sd")
    spec.inflate("first")
    cfg = EditConfig(num_inference_steps=1, reconstruct=False)
    res = edit_clip(spec, pixels, "a photo of a cup of coffee", cfg, [STEMInversion(num_bases=256)], progress=False)
    assert res.inversion.z.shape == (1, 4, 120, 128, 128)
    assert torch.isfinite(res.inversion.z).all()
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {peak_gib:.2f} GiB")
    assert peak_gib < 16
