"""Video reading/writing and small frame utilities.

Conventions
-----------
* At IO boundaries a video is a ``uint8`` numpy array shaped ``(F, H, W, 3)`` (RGB).
* Inside the framework a video is a float tensor in ``[-1, 1]`` shaped ``(C, F, H, W)``;
  ``to_tensor`` / ``to_frames`` convert between the two.

Backends: mp4 (and other containers) are decoded with decord when it is importable, otherwise with
PyAV; GIFs are read and written with imageio (decord cannot open GIFs).  mp4 files are written
with PyAV (H.264 / libx264, yuv420p) atomically (`modules.io_utils.atomic_write`): a temporary file
in the destination folder is renamed over the target once complete.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from modules.io_utils import atomic_write

__all__ = [
    "VideoError",
    "read_video",
    "video_fps",
    "num_video_frames",
    "write_video",
    "side_by_side",
    "to_tensor",
    "to_frames",
    "resize_center_crop",
]

REENCODE_HINT = "re-encode it, e.g. `ffmpeg -i in -c:v libx264 out.mp4`"
GIF_SUFFIXES = (".gif",)


class VideoError(ValueError):
    """A video file is missing, unreadable, or too short for the requested frames."""


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"video file not found: '{path}' (absolute: '{path.absolute()}'); check the path")
    if path.is_dir():
        raise VideoError(f"expected a video file but '{path}' is a directory")


def _unreadable(path: Path, err: BaseException | str) -> VideoError:
    return VideoError(
        f"cannot read video '{path}': the file is unreadable or corrupt ({err}); {REENCODE_HINT}"
    )


def _is_gif(path: Path) -> bool:
    return path.suffix.lower() in GIF_SUFFIXES


def _import_decord():
    """Return the decord module or None when it is not importable (tests monkeypatch this)."""
    try:
        import decord  # noqa: PLC0415
    except Exception:  # ImportError, or a broken native library
        return None
    return decord


def _pick_backend(path: Path, backend: str | None) -> str:
    if _is_gif(path):
        return "imageio"
    if backend is None:
        return "decord" if _import_decord() is not None else "pyav"
    if backend not in ("decord", "pyav"):
        raise ValueError(f"unknown video backend {backend!r}: use 'decord', 'pyav' or None (auto)")
    return backend


def _indices(path: Path, total: int, num_frames: int | None, stride: int, start: int) -> list[int]:
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride} (reading '{path}')")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start} (reading '{path}')")
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames must be >= 1 or None (all frames), got {num_frames} (reading '{path}')")
    if num_frames is None:
        if start >= total:
            raise VideoError(
                f"video '{path}' has {total} frames but start={start} needs at least {start + 1}; "
                f"lower `start`"
            )
        return list(range(start, total, stride))
    required = start + (num_frames - 1) * stride + 1
    if required > total:
        raise VideoError(
            f"video '{path}' has {total} frames available but {required} are required "
            f"(start + (num_frames - 1) * stride + 1 = {start} + {num_frames - 1} * {stride} + 1 "
            f"with start={start}, num_frames={num_frames}, stride={stride}); "
            f"lower `num_frames`, `stride` or `start`, or use a longer clip"
        )
    return list(range(start, required, stride))


def _read_decord(path: Path, decord, num_frames, stride, start) -> np.ndarray:
    """Decode with decord; on any decord failure retry with PyAV (decord has bugs with some frame
    sizes, e.g. 16 px wide), which raises the ``VideoError`` if the file really is unreadable."""
    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        total = len(vr)
    except Exception:  # decord raises DECORDError (a RuntimeError) on bad files
        return _read_pyav(path, num_frames, stride, start)
    if total == 0:
        return _read_pyav(path, num_frames, stride, start)
    idx = _indices(path, total, num_frames, stride, start)
    try:
        return vr.get_batch(idx).asnumpy()
    except Exception:
        return _read_pyav(path, num_frames, stride, start)


def _decode_all_pyav(path: Path, stop: int | None = None) -> np.ndarray:
    import av  # noqa: PLC0415

    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"'{path}' contains no video stream; {REENCODE_HINT}")
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if stop is not None and len(frames) >= stop:
                    break
    except VideoError:
        raise
    except Exception as err:  # av.error.InvalidDataError etc.
        raise _unreadable(path, err) from None
    if not frames:
        raise _unreadable(path, "no decodable frames")
    return np.stack(frames)


def _read_pyav(path: Path, num_frames, stride, start) -> np.ndarray:
    stop = None if num_frames is None else start + (num_frames - 1) * stride + 1
    allframes = _decode_all_pyav(path, stop)
    idx = _indices(path, len(allframes), num_frames, stride, start)
    return allframes[idx]


def _read_gif_all(path: Path) -> np.ndarray:
    import imageio.v3 as iio  # noqa: PLC0415

    try:
        frames = iio.imread(path, index=None, mode="RGB", extension=".gif")
    except Exception as err:
        raise _unreadable(path, err) from None
    frames = np.asarray(frames)
    if frames.ndim == 3:  # a single-frame GIF
        frames = frames[None]
    return frames[..., :3]


def read_video(
    path: str | os.PathLike,
    num_frames: int | None = None,
    stride: int = 1,
    start: int = 0,
    *,
    backend: str | None = None,
) -> np.ndarray:
    """Read frames ``start, start + stride, ...`` of a video as uint8 ``(F, H, W, 3)`` RGB.

    ``num_frames=None`` reads every ``stride``-th frame from ``start`` to the end.  ``backend`` is
    ``None`` (decord if importable, else PyAV), ``"decord"`` or ``"pyav"``; GIFs always use imageio.
    Raises ``VideoError`` when the file is missing, unreadable, or has too few frames.
    """
    path = Path(path)
    _check_exists(path)
    which = _pick_backend(path, backend)
    if which == "imageio":
        allframes = _read_gif_all(path)
        frames = allframes[_indices(path, len(allframes), num_frames, stride, start)]
    elif which == "decord":
        decord = _import_decord()
        if decord is None:
            raise ImportError("backend='decord' requested but decord is not importable; pip install decord")
        frames = _read_decord(path, decord, num_frames, stride, start)
    else:
        frames = _read_pyav(path, num_frames, stride, start)
    return np.ascontiguousarray(frames, dtype=np.uint8)


def num_video_frames(path: str | os.PathLike) -> int:
    """Number of frames in a video file (decoded count for GIF/PyAV, index length for decord)."""
    path = Path(path)
    _check_exists(path)
    which = _pick_backend(path, None)
    if which == "imageio":
        return len(_read_gif_all(path))
    if which == "decord":
        decord = _import_decord()
        try:
            return len(decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1))
        except Exception:
            pass  # PyAV below raises the VideoError if the file is really unreadable
    return len(_decode_all_pyav(path))


def video_fps(path: str | os.PathLike) -> float:
    """Average frame rate of a video file (frames per second)."""
    path = Path(path)
    _check_exists(path)
    which = _pick_backend(path, None)
    if which == "imageio":
        import imageio.v3 as iio  # noqa: PLC0415

        try:
            meta = iio.immeta(path, index=0, extension=".gif")
        except Exception as err:
            raise _unreadable(path, err) from None
        duration = meta.get("duration") or 0
        return 1000.0 / float(duration) if duration else 10.0  # browsers' default for 0 delay
    if which == "decord":
        decord = _import_decord()
        try:
            return float(decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1).get_avg_fps())
        except Exception:
            pass  # PyAV below raises the VideoError if the file is really unreadable
    import av  # noqa: PLC0415

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"'{path}' contains no video stream; {REENCODE_HINT}")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.base_rate or stream.guessed_rate
            return float(rate)
    except VideoError:
        raise
    except Exception as err:
        raise _unreadable(path, err) from None


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------


def _as_frames(frames, what: str = "frames") -> np.ndarray:
    """Validate/convert an ``(F, H, W, 3)`` uint8 video (accepts a torch tensor too)."""
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim == 3:  # (F, H, W) grayscale
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{what}: expected a uint8 video shaped (F, H, W, 3), got shape {frames.shape}; "
            f"convert framework tensors (C, F, H, W) in [-1, 1] with data.video_io.to_frames"
        )
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    frames = frames[..., :3]
    if frames.dtype != np.uint8:
        if np.issubdtype(frames.dtype, np.floating) and frames.size and frames.max() <= 1.0 and frames.min() < 0:
            raise ValueError(
                f"{what}: got float values in [-1, 1]; convert with data.video_io.to_frames first"
            )
        frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    if len(frames) == 0:
        raise ValueError(f"{what}: the video has no frames")
    return np.ascontiguousarray(frames)


def _pad_even(frames: np.ndarray) -> np.ndarray:
    _, h, w, _ = frames.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return frames


def _write_mp4(tmp: str, frames: np.ndarray, fps: float, crf: int, pix_fmt: str) -> None:
    import av  # noqa: PLC0415
    from fractions import Fraction  # noqa: PLC0415

    frames = _pad_even(frames)
    _, h, w, _ = frames.shape
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(tmp, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = w, h
        stream.pix_fmt = pix_fmt
        # mbtree=0: with macroblock-tree rate control x264 gave run-to-run different files for
        # identical small inputs; without it the output is reproducible (bundled samples)
        stream.options = {"crf": str(crf), "preset": "medium", "x264-params": "mbtree=0"}
        stream.codec_context.time_base = 1 / rate
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=pix_fmt)
            frame.pts = i  # explicit timestamps (x264's rate control depends on them)
            frame.time_base = stream.codec_context.time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_gif(tmp: str, frames: np.ndarray, fps: float) -> None:
    import imageio.v3 as iio  # noqa: PLC0415

    iio.imwrite(tmp, frames, extension=".gif", duration=1000.0 / fps, loop=0)


def write_video(
    path: str | os.PathLike,
    frames,
    fps: float = 8,
    *,
    crf: int = 12,
    pix_fmt: str = "yuv420p",
) -> Path:
    """Write a uint8 ``(F, H, W, 3)`` video; returns the path.

    ``.gif`` files are written with imageio, everything else as H.264 mp4 with PyAV (``libx264``,
    ``pix_fmt`` yuv420p, ``crf`` 12 by default = near-lossless).  Odd heights/widths are padded to
    even by repeating the last row/column (H.264 with 4:2:0 chroma needs even sizes).  The file is
    written to a temporary name in the same folder and renamed into place, so readers never see a
    half-written video.  Parent folders are created.
    """
    path = Path(path)
    frames = _as_frames(frames, f"write_video('{path}')")
    if not fps or fps <= 0:
        raise ValueError(f"write_video('{path}'): fps must be > 0, got {fps}")
    suffix = path.suffix.lower() or ".mp4"
    if suffix in GIF_SUFFIXES:
        atomic_write(path, lambda tmp: _write_gif(str(tmp), frames, fps))
    else:
        atomic_write(path, lambda tmp: _write_mp4(str(tmp), frames, fps, crf, pix_fmt))
    return path


# --------------------------------------------------------------------------------------------------
# frame utilities
# --------------------------------------------------------------------------------------------------


def _resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2  # noqa: PLC0415

    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    interp = cv2.INTER_AREA if (height <= h and width <= w) else cv2.INTER_CUBIC
    return cv2.resize(img, (width, height), interpolation=interp)


def side_by_side(*videos, gap: int = 2) -> np.ndarray:
    """Concatenate equally long uint8 videos horizontally, separated by ``gap`` white columns.

    Videos whose height differs from the first one are resized (keeping their aspect ratio) to it.
    """
    if not videos:
        raise ValueError("side_by_side needs at least one video")
    vids = [_as_frames(v, f"side_by_side video #{i}") for i, v in enumerate(videos)]
    lengths = [len(v) for v in vids]
    if len(set(lengths)) != 1:
        raise ValueError(f"side_by_side: videos must have the same number of frames, got {lengths}")
    height = vids[0].shape[1]
    parts = []
    for i, v in enumerate(vids):
        h, w = v.shape[1:3]
        if h != height:
            new_w = max(1, round(w * height / h))
            v = np.stack([_resize(f, height, new_w) for f in v])
        if i and gap > 0:
            parts.append(np.full((len(v), height, gap, 3), 255, dtype=np.uint8))
        parts.append(v)
    return np.concatenate(parts, axis=2)


def to_tensor(frames):
    """uint8 ``(F, H, W, 3)`` (numpy or torch) -> float32 torch tensor ``(C, F, H, W)`` in [-1, 1]."""
    import torch  # noqa: PLC0415

    frames = _as_frames(frames, "to_tensor")
    t = torch.from_numpy(frames).permute(3, 0, 1, 2).float()
    return (t / 127.5 - 1.0).contiguous()


def to_frames(tensor) -> np.ndarray:
    """Float tensor ``(C, F, H, W)`` in [-1, 1] -> uint8 numpy ``(F, H, W, C)`` (values clamped).

    A leading batch dimension of size 1 is dropped.
    """
    import torch  # noqa: PLC0415

    t = torch.as_tensor(tensor).detach()
    if t.ndim == 5 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 4:
        raise ValueError(
            f"to_frames: expected a tensor shaped (C, F, H, W) (or (1, C, F, H, W)), got {tuple(t.shape)}"
        )
    t = ((t.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return np.ascontiguousarray(t.permute(1, 2, 3, 0).cpu().numpy())


def resize_center_crop(frames, height: int, width: int) -> np.ndarray:
    """Resize a uint8 ``(F, H, W, 3)`` video so that it covers ``height x width``, then centre-crop.

    The scale is the smallest one for which both sides fit (the short side relative to the target
    aspect ratio matches exactly); ``cv2.INTER_AREA`` is used when shrinking, bicubic when enlarging.
    """
    frames = _as_frames(frames, "resize_center_crop")
    height, width = int(height), int(width)
    if height < 1 or width < 1:
        raise ValueError(f"resize_center_crop: height and width must be >= 1, got {height}x{width}")
    _, h, w, _ = frames.shape
    if (h, w) == (height, width):
        return frames.copy()
    scale = max(height / h, width / w)
    new_h = max(height, round(h * scale))
    new_w = max(width, round(w * scale))
    resized = frames if (new_h, new_w) == (h, w) else np.stack([_resize(f, new_h, new_w) for f in frames])
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.ascontiguousarray(resized[:, top : top + height, left : left + width])
