"""The world trainer (modules/world.py), its data (data/image_captions.py) and evaluation helpers
(modules/world_eval.py): data, one training step, the saved diffusers layout."""
import json

import torch

from data.image_captions import ImageCaptionDataModule
from modules.world import UNetConfig, WorldModule
from modules.world_eval import classify_frames, flicker, load_pan, pan_tracking


def test_random_crops_and_caption_dropout():
    dm = ImageCaptionDataModule(batch_size=8, steps_per_epoch=4, caption_dropout=0.5, seed=1)
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (8, 3, 32, 32)
    assert -1 <= batch["pixel_values"].min() and batch["pixel_values"].max() <= 1
    caps = [dm.dataset[i]["caption"] for i in range(64)]
    assert "" in caps and any(caps)
    assert torch.equal(dm.dataset[3]["pixel_values"], dm.dataset[3]["pixel_values"])  # deterministic


def test_train_step_and_save_world_roundtrip(tmp_path):
    from modules.models import load_parts

    cfg = UNetConfig(block_out_channels=(8, 16, 16), norm_num_groups=8)
    m = WorldModule(unet=cfg, ema_decay=0.9, output_dir=None)
    batch = {"pixel_values": torch.rand(2, 3, 32, 32) * 2 - 1, "caption": ["a photo of a cat", ""]}
    loss = m.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss) and m.unet.conv_in.weight.grad is not None
    m.on_train_batch_end(None, batch, 0)
    out = m.save_world(tmp_path / "world")
    for sub in ("unet", "text_encoder", "tokenizer", "scheduler"):
        assert (out / sub).is_dir()
    assert "seed" in (out / "README.md").read_text()
    assert json.loads((out / "model_index.json").read_text())["_name_or_path"] == "tiny-world"
    parts = load_parts(str(out))
    assert parts.pixel_space and parts.unet.dtype == torch.float32
    assert parts.unet.config.in_channels == 3
    ref = m.spec.encode_prompt(["a photo of a cat"])["encoder_hidden_states"]
    assert torch.allclose(parts.encode_prompt(["a photo of a cat"])["encoder_hidden_states"], ref, atol=1e-5)


def test_pan_classifier_on_the_source_clips():
    """The classifier and the tracking rule recognise the (unedited) bundled pans."""
    for name in ("astronaut", "coffee"):
        pan = load_pan(name)
        labels, _ = classify_frames(pan)
        assert labels == [name] * 8
        assert pan_tracking(pan, name) == 1.0
        assert flicker(pan) < 0.03


def test_training_noise_differs_between_ranks_and_repeats_on_one(monkeypatch):
    """DDP ranks draw different noise and timesteps (the training base's generator is keyed on the
    rank); the same rank at the same iteration draws the same."""
    import modules.training as training

    cfg = UNetConfig(block_out_channels=(8, 16, 16), norm_num_groups=8)
    m = WorldModule(unet=cfg, ema_decay=0.0)
    x0 = torch.rand(2, 3, 32, 32) * 2 - 1
    cond = m.spec.encode_prompt(["a photo of a cat", ""])
    drawn = {}
    for rank in (0, 1, 0):
        monkeypatch.setattr(training.TrainingModule, "global_rank", property(lambda self, r=rank: r))
        with torch.no_grad():
            _, aux = m.diffusion_loss(x0, cond, denoiser=m.denoise_images)
        drawn.setdefault(rank, []).append((aux.noise, aux.t))
    (n0, t0), (n0_again, t0_again) = drawn[0]
    (n1, t1), = drawn[1]
    assert torch.equal(n0, n0_again) and torch.equal(t0, t0_again)
    assert not torch.allclose(n0, n1) and not torch.equal(t0, t1)
