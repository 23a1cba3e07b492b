"""Restoration data (data/restoration.py): seeded items, masks of every kind (25% full), low-res
inputs, SDXL size conditions, image-folder and video sources, bad input."""
import json

import cv2
import numpy as np
import pytest
import torch

from data.restoration import MaskConfig, RestorationDataModule, downsample, random_mask


def setup_dm(**kw):
    dm = RestorationDataModule(**kw)
    dm.setup()
    return dm


def test_items_are_seeded_by_seed_epoch_and_index():
    a = setup_dm(task="inpainting", seed=3).train_set
    b = setup_dm(task="inpainting", seed=3).train_set
    for i in (0, 5):
        x, y = a[i], b[i]
        assert torch.equal(x["pixel_values"], y["pixel_values"]) and torch.equal(x["mask"], y["mask"])
        assert x["caption"] == y["caption"]
    b.epoch = 1
    assert not torch.equal(a[0]["pixel_values"], b[0]["pixel_values"]) or not torch.equal(a[0]["mask"], b[0]["mask"])
    other = setup_dm(task="inpainting", seed=4).train_set
    assert not torch.equal(a[0]["mask"], other[0]["mask"]) or not torch.equal(a[0]["pixel_values"], other[0]["pixel_values"])


def test_mask_kinds_and_frequencies():
    g = torch.Generator().manual_seed(0)
    kinds = []
    for _ in range(400):
        m, kind = random_mask(32, 32, g)
        kinds.append(kind)
        assert m.shape == (1, 32, 32) and set(m.unique().tolist()) <= {0.0, 1.0}
        on = m[0].nonzero()
        if kind == "full":
            assert m.all()
        elif kind == "rectangle":  # the regenerated region is exactly its bounding box
            (y0, x0), (y1, x1) = on.min(0).values, on.max(0).values
            assert m[0, y0:y1 + 1, x0:x1 + 1].all() and m.sum() == (y1 - y0 + 1) * (x1 - x0 + 1) and not m.all()
        elif kind == "outpaint":  # the kept region is exactly a rectangle
            off = (m[0] == 0).nonzero()
            (y0, x0), (y1, x1) = off.min(0).values, off.max(0).values
            assert not m[0, y0:y1 + 1, x0:x1 + 1].any() and (m == 0).sum() == (y1 - y0 + 1) * (x1 - x0 + 1)
        else:
            assert 0 < m.sum() < 32 * 32
    share = kinds.count("full") / len(kinds)
    assert abs(share - 0.25) < 4 * (0.25 * 0.75 / 400) ** 0.5  # 4 standard errors
    assert set(kinds) == {"full", "rectangle", "brush", "outpaint"}
    only = [random_mask(16, 16, g, MaskConfig(full=0, rectangle=1, brush=0, outpaint=0))[1] for _ in range(20)]
    assert set(only) == {"rectangle"}


def test_super_resolution_items_carry_the_downsampled_crop():
    ds = setup_dm(task="super_resolution", scale=4).train_set
    item = ds[2]
    assert item["low_res"].shape == (3, 8, 8) and "mask" not in item
    assert torch.equal(item["low_res"], downsample(item["pixel_values"], 4))
    # antialiased: the low-res pixel is close to the block mean
    assert (item["low_res"] - torch.nn.functional.avg_pool2d(item["pixel_values"][None], 4)[0]).abs().mean() < 0.05


def test_sdxl_size_conditions_follow_the_crop(tmp_path):
    img = (np.arange(60 * 90 * 3) % 251).astype(np.uint8).reshape(60, 90, 3)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"image": "a.png", "caption": "stripes"}) + "\n")
    ds = setup_dm(task="inpainting", source=str(tmp_path), size=32, resize=40, caption_dropout=0.0).train_set
    item = ds[1]
    assert item["original_size"].tolist() == [60, 90] and item["caption"] == "stripes"
    y, x = item["crop_top_left"].tolist()
    assert 0 <= y <= 40 - 32 and 0 <= x <= 60 - 32  # the resized image is 40×60
    resized = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (60, 40), interpolation=cv2.INTER_AREA)
    expect = torch.from_numpy(resized[y:y + 32, x:x + 32]).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.equal(item["pixel_values"], expect)


def test_a_plain_image_folder_and_a_video_are_sources(tmp_path):
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), np.full((48, 48, 3), 40 * i, np.uint8))
    ds = setup_dm(task="super_resolution", scale=8, source=str(tmp_path), size=32, resize=32).train_set
    assert ds[0]["caption"] == "" and ds[0]["pixel_values"].shape == (3, 32, 32)
    clip = setup_dm(task="inpainting", source="samples/pan_astronaut.mp4", size=32, resize=32, caption_dropout=0.0).train_set
    item = clip[0]
    assert item["caption"] == "a photo of an astronaut" and item["original_size"].tolist() == [64, 64]


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="scale is required for super_resolution"):
        setup_dm(task="super_resolution")
    with pytest.raises(ValueError, match="size 30 is not a multiple of the super-resolution scale 4"):
        setup_dm(task="super_resolution", scale=4, size=30)
    with pytest.raises(ValueError, match="no metadata.jsonl and no"):
        setup_dm(task="inpainting", source=str(tmp_path))
    with pytest.raises(ValueError, match="frequencies must be >= 0"):
        setup_dm(task="inpainting", masks={"full": 0, "rectangle": 0, "brush": 0, "outpaint": 0})
    with pytest.raises(ValueError, match="resize .* must be >= size"):
        setup_dm(task="inpainting", size=32, resize=16)
