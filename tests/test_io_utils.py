"""The one atomic-write helper (modules/io_utils.py) as its users rely on it."""
from __future__ import annotations

import numpy as np
import pytest

from modules.io_utils import atomic_directory


def test_keep_existing_lets_the_first_complete_folder_win(tmp_path):
    target = tmp_path / "cache"
    with atomic_directory(target, keep_existing=True) as tmp:
        (tmp / "a.txt").write_text("ours")
        # another process finishes first, while we are still writing
        target.mkdir()
        (target / "a.txt").write_text("theirs")
    assert (target / "a.txt").read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # our temporary is gone
    with atomic_directory(target, keep_existing=True) as tmp:  # already there: kept as is
        (tmp / "a.txt").write_text("later")
    assert (target / "a.txt").read_text() == "theirs"
    with atomic_directory(target) as tmp:  # the default replaces it
        (tmp / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_save_once_builds_atomically_and_refuses_a_broken_folder(tmp_path):
    from modules.models.tiny import save_once

    def build(tmp):
        (tmp / "weights.bin").write_bytes(b"w")
        return {"_class_name": "X"}

    def crash(tmp):
        (tmp / "weights.bin").write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        save_once(tmp_path / "m", crash)
    assert list(tmp_path.iterdir()) == []  # nothing half-built left
    assert save_once(tmp_path / "m", build) == tmp_path / "m"
    assert (tmp_path / "m" / "model_index.json").is_file() and [p.name for p in tmp_path.iterdir()] == ["m"]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "unet").mkdir()
    with pytest.raises(FileExistsError, match="delete that folder"):
        save_once(tmp_path / "broken", build)


def test_write_video_failure_keeps_the_old_video(tmp_path, monkeypatch):
    import data.video_io as video_io

    target = tmp_path / "v.mp4"
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    video_io.write_video(target, frames)
    before = target.read_bytes()

    def crash(tmp, *args):
        open(tmp, "wb").write(b"half")
        raise RuntimeError("encoder died")

    monkeypatch.setattr(video_io, "_write_mp4", crash)
    with pytest.raises(RuntimeError, match="encoder died"):
        video_io.write_video(target, frames + 255)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["v.mp4"]
