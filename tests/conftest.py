import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_parts():
    from modules.models import load_parts

    return load_parts("tiny-sd")


@pytest.fixture(scope="session")
def sample_clip():
    """The bundled astronaut pan at 32×32, (1, 3, 8, 32, 32) in [-1, 1]."""
    from data.clip_dataset import ClipDataset

    ds = ClipDataset("samples/pan_astronaut.mp4", prompt="a photo of an astronaut", num_frames=8, height=32, width=32)
    return ds[0]["pixel_values"][None]
