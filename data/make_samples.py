"""Generate the bundled sample clips in ``data/samples/`` (run once; outputs are committed).

    .venv/bin/python -m data.make_samples        # or: .venv/bin/python data/make_samples.py

Every clip is a camera pan over a scikit-image photograph (``data/photos.py``) with exactly known
motion, and its ground-truth optical flow is saved beside it as ``<name>.flow.npy``.

Flow convention (the one OpenCV's ``calcOpticalFlowFarneback(prev=frame_n, next=frame_n+1)``
returns, and the one ``modules.metrics`` uses): ``flow[n]`` is a float32 ``(H, W, 2)`` array of
``(dx, dy)`` in pixels such that

    frame_n(y, x) ≈ frame_{n+1}(y + dy, x + dx)

i.e. the content at ``(x, y)`` in frame ``n`` moves to ``(x + dx, y + dy)`` in frame ``n + 1``.
The file holds ``(F - 1, H, W, 2)``.

Clips
-----
* ``pan_<photo>.mp4`` for each photo in ``PHOTOS``: 8 frames, 64x64, 8 fps.  Frame ``n`` is the
  64x64 window of ``photo(name, 80)`` at x offset ``2n``, y offset ``8``: the camera pans right by
  2 px/frame, so the content moves left and the flow is ``(dx, dy) = (-2, 0)`` everywhere.
  Loaded at 32x32 (``INTER_AREA``, an exact 2x2 average) these are the 32x32 windows at x offset
  ``n``, y offset ``4`` of the 80->40 downsampled photo, i.e. ~``photo(name, 40)``, panning 1 px/frame.
* ``zoom_coffee_12f.mp4``: 12 frames at 72x120 (H x W), a slow diagonal pan over
  ``photo("coffee", 168)``: the window moves by (+3, +1) px per frame, flow ``(-3, -1)``.

``metadata.jsonl`` has one line per clip:
``{"video": ..., "prompt": ..., "edit_prompts": [...], "flow": ...}``.

mp4 is lossy: clips are written with libx264 crf 4 and yuv444p (4:2:0 chroma subsampling alone
costs some photos > 5 dB), and the script checks that reading them back gives PSNR > 35 dB.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data.photos import PHOTOS, photo  # noqa: E402
from data.video_io import read_video, resize_center_crop, write_video  # noqa: E402

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
FPS = 8
CRF = 4
PIX_FMT = "yuv444p"
MIN_PSNR = 35.0

PAN_FRAMES, PAN_SIZE, PAN_PHOTO_SIZE, PAN_STEP, PAN_Y = 8, 64, 80, 2, 8
ZOOM_FRAMES, ZOOM_H, ZOOM_W, ZOOM_PHOTO_SIZE, ZOOM_STEP = 12, 72, 120, 168, (3, 1)


def pan_frames(name: str) -> np.ndarray:
    """The 8 generated (uncompressed) frames of ``pan_<name>.mp4``."""
    img = photo(name, PAN_PHOTO_SIZE)
    return np.stack(
        [img[PAN_Y : PAN_Y + PAN_SIZE, PAN_STEP * n : PAN_STEP * n + PAN_SIZE] for n in range(PAN_FRAMES)]
    )


def zoom_frames() -> np.ndarray:
    """The 12 generated (uncompressed) frames of ``zoom_coffee_12f.mp4`` (72x120)."""
    img = photo("coffee", ZOOM_PHOTO_SIZE)
    sx, sy = ZOOM_STEP
    x0 = (ZOOM_PHOTO_SIZE - ZOOM_W - sx * (ZOOM_FRAMES - 1)) // 2
    y0 = (ZOOM_PHOTO_SIZE - ZOOM_H - sy * (ZOOM_FRAMES - 1)) // 2
    return np.stack(
        [
            img[y0 + sy * n : y0 + sy * n + ZOOM_H, x0 + sx * n : x0 + sx * n + ZOOM_W]
            for n in range(ZOOM_FRAMES)
        ]
    )


def constant_flow(num_frames: int, height: int, width: int, dx: float, dy: float) -> np.ndarray:
    """Ground-truth flow ``(F-1, H, W, 2)`` float32 for a translation of the content by (dx, dy)/frame."""
    flow = np.empty((num_frames - 1, height, width, 2), dtype=np.float32)
    flow[..., 0] = dx
    flow[..., 1] = dy
    return flow


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def make_clip(name: str, frames: np.ndarray, flow: np.ndarray, out_dir: Path) -> float:
    video = write_video(out_dir / f"{name}.mp4", frames, fps=FPS, crf=CRF, pix_fmt=PIX_FMT)
    np.save(out_dir / f"{name}.flow.npy", flow)
    back = read_video(video)
    if back.shape != frames.shape:
        raise RuntimeError(f"{video}: read back shape {back.shape} != written {frames.shape}")
    quality = psnr_db(back, frames)
    if quality <= MIN_PSNR:
        raise RuntimeError(f"{video}: round-trip PSNR {quality:.1f} dB <= {MIN_PSNR} dB; lower CRF")
    return quality


def main(out_dir: Path = SAMPLES_DIR) -> list[dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(PHOTOS)
    records = []
    for i, name in enumerate(names):
        clip = f"pan_{name}"
        frames = pan_frames(name)
        flow = constant_flow(PAN_FRAMES, PAN_SIZE, PAN_SIZE, dx=-PAN_STEP, dy=0)
        quality = make_clip(clip, frames, flow, out_dir)
        # check the 32x32 geometry promised to the tiny models: windows of photo(name, 40)
        small = resize_center_crop(read_video(out_dir / f"{clip}.mp4"), 32, 32)
        p40 = photo(name, 40)
        ref = np.stack([p40[4:36, n : n + 32] for n in range(PAN_FRAMES)])
        print(f"{clip}.mp4: PSNR {quality:.1f} dB; at 32x32 vs photo(40) windows {psnr_db(small, ref):.1f} dB")
        records.append(
            {
                "video": f"{clip}.mp4",
                "prompt": PHOTOS[name],
                "edit_prompts": [PHOTOS[names[(i + 1) % len(names)]]],
                "flow": f"{clip}.flow.npy",
            }
        )
    frames = zoom_frames()
    flow = constant_flow(ZOOM_FRAMES, ZOOM_H, ZOOM_W, dx=-ZOOM_STEP[0], dy=-ZOOM_STEP[1])
    quality = make_clip("zoom_coffee_12f", frames, flow, out_dir)
    print(f"zoom_coffee_12f.mp4: PSNR {quality:.1f} dB")
    records.append(
        {
            "video": "zoom_coffee_12f.mp4",
            "prompt": PHOTOS["coffee"],
            "edit_prompts": [PHOTOS["rocket"], "a photo of a cup of tea"],
            "flow": "zoom_coffee_12f.flow.npy",
        }
    )
    with open(out_dir / "metadata.jsonl", "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    total = sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())
    print(f"wrote {len(records)} clips to {out_dir} ({total / 1e6:.2f} MB)")
    return records


if __name__ == "__main__":
    main()
