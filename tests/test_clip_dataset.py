import json

import numpy as np
import pytest
import torch

import data.clip_dataset as clip_dataset
from data.clip_dataset import SAMPLES_DIR, ClipDataModule, ClipDataset, load_clips, resolve_path
from data.photos import PHOTOS, photo
from data.video_io import VideoError, to_frames, write_video


def ramp_video(num_frames=6, height=24, width=40, offset=0):
    y, x = np.mgrid[0:height, 0:width]
    frames = [np.stack([x * 5 + 4 * n + offset, y * 8, np.full_like(x, 100 + 10 * n)], -1) for n in range(num_frames)]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    write_video(folder / "a.mp4", ramp_video(6))
    (folder / "sub").mkdir()
    write_video(folder / "sub" / "b.mp4", ramp_video(8, offset=60))
    return folder


def write_metadata(folder, records):
    with open(folder / "metadata.jsonl", "w") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def test_single_file_with_prompt(clip_dir):
    ds = ClipDataset(clip_dir / "a.mp4", prompt="a ramp", num_frames=4, stride=1, start=1, height=16, width=16, repeats=3)
    assert len(ds) == 3 and ds.num_clips == 1
    item = ds[2]
    px = item["pixel_values"]
    assert px.shape == (3, 4, 16, 16) and px.dtype == torch.float32
    assert -1 <= px.min() < px.max() <= 1
    assert item["prompt"] == "a ramp" and item["index"] == 0 and item["video"].endswith("a.mp4")
    # frame selection: the blue channel is 100 + 10 n, frames 1..4
    blue = (to_frames(px)[..., 2].reshape(4, -1).mean(1))
    np.testing.assert_allclose(blue, [110, 120, 130, 140], atol=2)
    with pytest.raises(IndexError):
        ds[3]


def test_native_size_and_all_frames(clip_dir):
    ds = ClipDataset(clip_dir / "a.mp4", prompt="p")
    assert ds[0]["pixel_values"].shape == (3, 6, 24, 40)


def test_metadata_folder(clip_dir, tmp_path):
    write_metadata(
        tmp_path,
        [
            {"video": str(clip_dir / "a.mp4"), "prompt": "first", "edit_prompts": ["edit one"]},
            {"video": str(clip_dir / "sub" / "b.mp4"), "prompt": "second", "edit_prompts": ["edit two", "edit one"]},
        ],
    )
    ds = ClipDataset(tmp_path, num_frames=5, height=16, width=24, repeats=2)
    assert len(ds) == 4 and ds.prompts == ["first", "second"]
    assert [ds[i]["index"] for i in range(4)] == [0, 1, 0, 1]
    assert [ds[i]["prompt"] for i in range(4)] == ["first", "second", "first", "second"]
    assert ds.edit_prompts == ["edit one", "edit two"]
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["pixel_values"].shape == (2, 3, 5, 16, 24)
    # the two clips differ (offset 60 in red)
    assert not torch.equal(ds[0]["pixel_values"], ds[1]["pixel_values"])


def test_prompts_and_videos_txt(clip_dir):
    (clip_dir / "prompts.txt").write_text("ramp a\nramp b\n")
    (clip_dir / "videos.txt").write_text("a.mp4\nsub/b.mp4\n")
    try:
        ds = ClipDataset(clip_dir, num_frames=6, height=24, width=40)
        assert len(ds) == 2 and ds.prompts == ["ramp a", "ramp b"]
        assert ds[1]["video"].endswith("b.mp4") and ds[1]["pixel_values"].shape == (3, 6, 24, 40)
        (clip_dir / "videos.txt").write_text("a.mp4\n")
        with pytest.raises(ValueError) as err:
            ClipDataset(clip_dir, num_frames=6)
        msg = str(err.value)
        assert "2 prompts" in msg and "1 videos" in msg and "prompts.txt" in msg and "videos.txt" in msg
    finally:
        (clip_dir / "prompts.txt").unlink()
        (clip_dir / "videos.txt").unlink()


def test_unreadable_prompt_file(tmp_path):
    (tmp_path / "prompts.txt").write_bytes(b"\xff\xfe\xfa bad bytes")
    (tmp_path / "videos.txt").write_text("a.mp4\n")
    with pytest.raises(ValueError, match=r"prompts\.txt.*UTF-8"):
        load_clips(tmp_path)
    (tmp_path / "prompts.txt").unlink()
    with pytest.raises(ValueError, match=r"cannot read .*prompts\.txt"):
        load_clips(tmp_path)


def test_metadata_errors(clip_dir, tmp_path):
    write_metadata(tmp_path, [{"video": str(clip_dir / "a.mp4"), "prompt": "ok"}, {"video": str(clip_dir / "a.mp4")}])
    with pytest.raises(ValueError) as err:
        load_clips(tmp_path)
    assert "metadata.jsonl:2" in str(err.value) and "'prompt'" in str(err.value)

    write_metadata(tmp_path, ['{"prompt": "no video"}'])
    with pytest.raises(ValueError, match=r"metadata\.jsonl:1.*'video'"):
        load_clips(tmp_path)

    write_metadata(tmp_path, ["{not json"])
    with pytest.raises(ValueError, match=r"metadata\.jsonl:1.*invalid JSON"):
        load_clips(tmp_path)

    write_metadata(tmp_path, [{"video": "missing.mp4", "prompt": "p"}])
    with pytest.raises(VideoError) as err:
        load_clips(tmp_path)
    assert "missing.mp4" in str(err.value) and "metadata.jsonl:1" in str(err.value)


def test_missing_inputs(tmp_path, clip_dir):
    with pytest.raises(VideoError, match="nothing.mp4"):
        ClipDataset(tmp_path / "nothing.mp4", prompt="p")
    with pytest.raises(ValueError, match="no prompt for video"):
        ClipDataset(clip_dir / "a.mp4")
    with pytest.raises(ValueError, match="metadata.jsonl"):
        load_clips(tmp_path)  # empty folder
    with pytest.raises(VideoError, match="19 are required"):
        ClipDataset(clip_dir / "a.mp4", prompt="p", num_frames=10, stride=2)


def test_bundled_sample_metadata_and_flow():
    ds = ClipDataset("samples/pan_astronaut.mp4", num_frames=8, height=32, width=32)
    assert ds.prompts == ["a photo of an astronaut"] and ds.edit_prompts == ["a photo of a cat"]
    px = ds[0]["pixel_values"]
    assert px.shape == (3, 8, 32, 32)
    # geometry promised to the tiny models: 32x32 windows of photo(name, 40) panning 1 px/frame
    p40 = photo("astronaut", 40).astype(np.float64)
    frames = to_frames(px).astype(np.float64)
    for n in (0, 7):
        assert np.abs(frames[n] - p40[4:36, n : n + 32]).mean() < 3
    flow = ds.flow(0)
    assert flow.shape == (7, 32, 32, 2) and flow.dtype == np.float32
    np.testing.assert_allclose(flow[..., 0], -1.0)  # dx: content moves 1 px left per frame
    np.testing.assert_allclose(flow[..., 1], 0.0)  # dy: no vertical motion
    # the flow agrees with the frames: pixel x of frame n is pixel x - 1 of frame n + 1
    for n in range(7):
        moved = np.abs(frames[n + 1][:, :-1] - frames[n][:, 1:]).mean()
        assert moved < 3 and moved < np.abs(frames[n + 1] - frames[n]).mean() / 3
    strided = ClipDataset("samples/pan_astronaut.mp4", num_frames=3, stride=3, start=1)
    np.testing.assert_allclose(strided.flow(0)[..., 0], -6.0)  # 3 frames of -2 px composed
    np.testing.assert_allclose(strided.flow(0)[..., 1], 0.0)


def test_all_bundled_samples_listed():
    clips = load_clips(SAMPLES_DIR)
    names = {c.video.name for c in clips}
    assert names == {f"pan_{p}.mp4" for p in PHOTOS} | {"zoom_coffee_12f.mp4"}
    for c in clips:
        assert c.flow is not None and c.flow.is_file() and c.edit_prompts


def test_non_power_of_two_clip_native_size():
    ds = ClipDataset("samples/zoom_coffee_12f.mp4")
    assert ds[0]["pixel_values"].shape == (3, 12, 72, 120)
    assert ds.flow(0).shape == (11, 72, 120, 2)
    ds = ClipDataset("samples/zoom_coffee_12f.mp4", num_frames=12, height=24, width=40)
    assert ds[0]["pixel_values"].shape == (3, 12, 24, 40)
    np.testing.assert_allclose(ds.flow(0)[0, 5, 5], [-1.0, -1 / 3], atol=1e-5)


def test_resolve_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # bundled samples resolve from any working directory
    assert resolve_path("samples/pan_rocket.mp4") == SAMPLES_DIR / "pan_rocket.mp4"
    assert resolve_path("pan_rocket.mp4") == SAMPLES_DIR / "pan_rocket.mp4"
    (tmp_path / "samples").mkdir()
    write_video(tmp_path / "samples" / "pan_rocket.mp4", ramp_video(2))
    assert resolve_path("samples/pan_rocket.mp4").resolve() == (tmp_path / "samples" / "pan_rocket.mp4").resolve()
    with pytest.raises(VideoError) as err:
        resolve_path("samples/nope.mp4")
    assert "samples/nope.mp4" in str(err.value) and "pan_astronaut.mp4" in str(err.value)


def test_datamodule_single_clip(monkeypatch):
    calls = []
    real_read = clip_dataset.read_video

    def counting_read(*args, **kwargs):
        calls.append(args[0])
        return real_read(*args, **kwargs)

    monkeypatch.setattr(clip_dataset, "read_video", counting_read)
    dm = ClipDataModule("samples/pan_chelsea.mp4", num_frames=6, stride=1, steps_per_epoch=5)
    assert dm.prompt == "a photo of a cat" and dm.edit_prompts == ["a photo of a cup of coffee"]
    assert calls == []  # nothing decoded before setup
    dm.setup("fit")
    train = dm.train_dataloader()
    batches = list(train)
    assert len(train) == 5 and len(batches) == 5
    b = batches[0]
    assert b["pixel_values"].shape == (1, 3, 6, 32, 32) and b["prompt"] == ["a photo of a cat"]
    assert b["index"].tolist() == [0]
    assert len(dm.val_dataloader()) == 1 and len(dm.predict_dataloader()) == 1
    assert len(list(ClipDataModule("samples/pan_chelsea.mp4", steps_per_epoch=3).train_dataloader())) == 3
    assert len(calls) == 2  # each data module decoded its clip exactly once
    assert dm.hparams["steps_per_epoch"] == 5


def test_datamodule_overrides_and_errors(clip_dir):
    dm = ClipDataModule("samples/pan_retina.mp4", prompt="a photo of an eye", edit_prompts=["a photo of the moon"])
    assert dm.prompt == "a photo of an eye" and dm.edit_prompts == ["a photo of the moon"]
    assert dm.val_dataloader().dataset[0]["prompt"] == "a photo of an eye"
    dm = ClipDataModule(str(clip_dir / "a.mp4"), prompt="ramp", num_frames=4, height=16, width=24, steps_per_epoch=4, batch_size=2)
    assert dm.edit_prompts == []
    assert len(dm.train_dataloader()) == 4 and next(iter(dm.train_dataloader()))["pixel_values"].shape == (2, 3, 4, 16, 24)
    with pytest.raises(ValueError, match="num_frames"):
        ClipDataModule("samples/pan_retina.mp4", num_frames=0)
    with pytest.raises(ValueError, match="no prompt"):
        ClipDataModule(str(clip_dir / "a.mp4"))


def test_datamodule_from_jsonargparse():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(ClipDataModule, "data")
    cfg = parser.parse_args(
        ["--data.video=samples/pan_coffee.mp4", "--data.edit_prompts=[a photo of a cup of tea]", "--data.height=40"]
    )
    assert cfg.data.num_frames == 8 and cfg.data.width == 32 and cfg.data.height == 40
    dm = ClipDataModule(**vars(cfg.data))
    assert dm.edit_prompts == ["a photo of a cup of tea"] and dm.prompt == "a photo of a cup of coffee"
