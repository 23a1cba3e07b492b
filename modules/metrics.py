"""Video quality metrics shared by all editing methods.

Videos are uint8 numpy arrays ``(F, H, W, 3)`` (framework tensors ``(C, F, H, W)`` in [-1, 1]
are accepted too and converted with ``data.video_io.to_frames``).

Optical flow convention (the one of OpenCV's ``calcOpticalFlowFarneback(prev=n, next=n+1)`` and of
the bundled ``data/samples/*.flow.npy``): ``flow[n]`` is ``(H, W, 2)`` float32 ``(dx, dy)`` with

    frame_n(y, x) ≈ frame_{n+1}(y + dy, x + dx)

so ``warp(frame_{n+1}, flow[n])`` — which samples ``frame_{n+1}`` at ``(x + dx, y + dy)`` — is an
estimate of ``frame_n``.

CLIP scores (``ClipScorer``) follow the SAVE paper: text alignment is the mean cosine similarity
between each frame's image embedding and the prompt's text embedding, frame consistency the mean
cosine similarity between the image embeddings of all pairs of frames, both x100 by default.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = [
    "psnr",
    "ssim",
    "optical_flow",
    "warp",
    "warping_error",
    "ClipScorer",
]


def _video(x, what: str) -> np.ndarray:
    """Return a uint8 ``(F, H, W, 3)`` numpy video (a single ``(H, W, 3)`` frame becomes F=1)."""
    if hasattr(x, "detach"):  # torch tensor
        import torch

        if x.dtype == torch.uint8:
            x = x.detach().cpu().numpy()
        else:
            from data.video_io import to_frames

            x = to_frames(x)
    x = np.asarray(x)
    if x.ndim == 3 and x.shape[-1] in (1, 3):
        x = x[None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"{what}: expected a uint8 video shaped (F, H, W, 3), got shape {x.shape}")
    if x.dtype != np.uint8:
        if np.issubdtype(x.dtype, np.floating) and x.size and x.min() < 0:
            raise ValueError(
                f"{what}: got float values below 0 (a [-1, 1] tensor?); convert with data.video_io.to_frames"
            )
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return x


def _pair(a, b, name: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = _video(a, f"{name}: first video"), _video(b, f"{name}: second video")
    if a.shape != b.shape:
        raise ValueError(f"{name}: videos must have the same shape, got {a.shape} and {b.shape}")
    return a, b


# --------------------------------------------------------------------------------------------------
# reconstruction metrics
# --------------------------------------------------------------------------------------------------


def psnr(a, b, data_range: float = 255.0) -> np.ndarray:
    """Per-frame PSNR in dB between two uint8 videos ``(F, H, W, 3)``; ``inf`` for identical frames."""
    a, b = _pair(a, b, "psnr")
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = (diff**2).reshape(len(a), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def ssim(a, b) -> np.ndarray:
    """Per-frame SSIM (``skimage.metrics.structural_similarity``, RGB, 7x7 window) of two uint8 videos."""
    from skimage.metrics import structural_similarity

    a, b = _pair(a, b, "ssim")
    h, w = a.shape[1:3]
    win = min(7, h, w)
    win -= 1 - win % 2  # odd
    if win < 3:
        raise ValueError(f"ssim: frames of {h}x{w} are too small (need at least 3x3)")
    return np.array(
        [
            structural_similarity(x, y, channel_axis=-1, data_range=255, win_size=win)
            for x, y in zip(a, b)
        ],
        dtype=np.float64,
    )


# --------------------------------------------------------------------------------------------------
# optical flow and temporal consistency
# --------------------------------------------------------------------------------------------------


def optical_flow(frames, method: str = "farneback") -> np.ndarray:
    """Dense optical flow between consecutive frames of a uint8 video -> float32 ``(F-1, H, W, 2)``.

    ``method`` is ``"farneback"`` (``cv2.calcOpticalFlowFarneback``) or ``"dis"`` (``cv2.DISOpticalFlow``).
    Convention: ``frame_n(y, x) ≈ frame_{n+1}(y + dy, x + dx)`` (see the module docstring).
    """
    import cv2

    v = _video(frames, "optical_flow")
    if len(v) < 2:
        raise ValueError(f"optical_flow: need at least 2 frames, got {len(v)}")
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) if f.shape[-1] == 3 else f[..., 0] for f in v]
    h, w = gray[0].shape
    out = np.empty((len(v) - 1, h, w, 2), dtype=np.float32)
    if method == "farneback":
        levels = max(0, min(3, int(np.log2(max(1, min(h, w) / 8)))))
        win = max(5, min(15, min(h, w) // 4 * 2 + 1))
        for n in range(len(v) - 1):
            out[n] = cv2.calcOpticalFlowFarneback(
                gray[n], gray[n + 1], None, pyr_scale=0.5, levels=levels, winsize=win,
                iterations=5, poly_n=5, poly_sigma=1.1, flags=0,
            )
    elif method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        for n in range(len(v) - 1):
            out[n] = dis.calc(gray[n], gray[n + 1], None)
    else:
        raise ValueError(f"optical_flow: unknown method {method!r}; use 'farneback' or 'dis'")
    return out


def warp(frame, flow, return_mask: bool = False):
    """Sample ``frame`` at ``(x + dx, y + dy)`` (bilinear ``cv2.remap``).

    With the flow of ``n -> n+1``, ``warp(frame_{n+1}, flow[n])`` estimates ``frame_n``.  ``frame`` is
    ``(H, W)`` or ``(H, W, C)`` (any dtype cv2 supports; the result has the same dtype), ``flow`` is
    ``(H, W, 2)``.  Pixels sampled from outside the frame are 0; with ``return_mask=True`` a boolean
    ``(H, W)`` mask of the in-frame (valid) pixels is returned too.
    """
    import cv2

    frame = np.asarray(frame)
    flow = np.asarray(flow, dtype=np.float32)
    h, w = frame.shape[:2]
    if flow.shape != (h, w, 2):
        raise ValueError(f"warp: flow must be shaped (H, W, 2) = ({h}, {w}, 2) like the frame, got {flow.shape}")
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x, map_y = gx + flow[..., 0], gy + flow[..., 1]
    src = frame.astype(np.float32) if frame.dtype == np.float64 else frame
    out = cv2.remap(src, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if out.ndim < frame.ndim:  # cv2 drops a trailing channel axis of size 1
        out = out[..., None]
    out = out.astype(frame.dtype, copy=False)
    if not return_mask:
        return out
    eps = 1e-3
    mask = (map_x >= -eps) & (map_x <= w - 1 + eps) & (map_y >= -eps) & (map_y <= h - 1 + eps)
    return out, mask


def warping_error(source_frames, output_frames, flow=None) -> tuple[float, np.ndarray]:
    """Temporal warping error of an edited video.

    The flow is estimated on the *source* video with ``optical_flow`` unless given (``(F-1, H, W, 2)``,
    same convention).  For each n, output frame n+1 is warped back onto frame n and the mean squared
    error over the valid (in-frame) pixels is taken, with intensities in [0, 1].  Returns
    ``(mean over n, per-pair array of F-1 values)``.
    """
    src = _video(source_frames, "warping_error: source video")
    out = _video(output_frames, "warping_error: output video")
    if src.shape != out.shape:
        raise ValueError(
            f"warping_error: source {src.shape} and output {out.shape} videos must have the same shape; "
            f"resize one with data.video_io.resize_center_crop"
        )
    if len(out) < 2:
        raise ValueError(f"warping_error: need at least 2 frames, got {len(out)}")
    if flow is None:
        flow = optical_flow(src)
    flow = np.asarray(flow, dtype=np.float32)
    expected = (len(out) - 1, *out.shape[1:3], 2)
    if flow.shape != expected:
        raise ValueError(f"warping_error: flow must be shaped (F-1, H, W, 2) = {expected}, got {flow.shape}")
    outf = out.astype(np.float32) / 255.0
    errors = np.empty(len(out) - 1, dtype=np.float64)
    for n in range(len(out) - 1):
        warped, mask = warp(outf[n + 1], flow[n], return_mask=True)
        if not mask.any():
            errors[n] = np.nan
            continue
        diff = (warped - outf[n])[mask]
        errors[n] = float(np.mean(diff.astype(np.float64) ** 2))
    return float(np.nanmean(errors)) if np.isfinite(errors).any() else float("nan"), errors


# --------------------------------------------------------------------------------------------------
# CLIP scores
# --------------------------------------------------------------------------------------------------


def _embedding(out):
    """Projected embeddings from ``get_text_features``/``get_image_features`` across transformers versions."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    for key in ("text_embeds", "image_embeds", "pooler_output"):
        value = getattr(out, key, None)
        if value is not None:
            return value
    raise TypeError(f"unexpected CLIP feature output {type(out).__name__}")


def _image_processor_class():
    """``CLIPImageProcessor``, or its PIL variant when torchvision is missing (same output, no warning)."""
    import importlib.util

    import transformers

    if importlib.util.find_spec("torchvision") is None and hasattr(transformers, "CLIPImageProcessorPil"):
        return transformers.CLIPImageProcessorPil
    return transformers.CLIPImageProcessor


class ClipScorer:
    """CLIP text-alignment and frame-consistency scores from a local CLIP checkpoint.

    ``path`` is a directory saved with ``save_pretrained`` holding the ``CLIPModel`` weights/config, a
    tokenizer and a ``CLIPImageProcessor`` (``preprocessor_config.json``), e.g. a download of
    ``openai/clip-vit-base-patch32``.  Nothing is ever downloaded.
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu", batch_size: int = 32) -> None:
        path = Path(path).expanduser()
        hint = (
            f"download a CLIP checkpoint into it first, e.g. "
            f"`huggingface-cli download openai/clip-vit-base-patch32 --local-dir {path}` "
            f"(or CLIPModel/CLIPProcessor.from_pretrained('openai/clip-vit-base-patch32').save_pretrained('{path}'))"
        )
        if not path.is_dir():
            raise FileNotFoundError(f"CLIP model directory '{path}' not found; {hint}")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"CLIP model directory '{path}' has no config.json; {hint}")
        import torch
        from transformers import AutoTokenizer, CLIPModel

        try:
            self.model = CLIPModel.from_pretrained(path).to(device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.image_processor = _image_processor_class().from_pretrained(path)
        except (OSError, ValueError) as err:
            raise OSError(f"cannot load a CLIP model/tokenizer/image processor from '{path}': {err}; {hint}") from err
        self.path, self.device, self.batch_size = path, torch.device(device), int(batch_size)

    def _text_embeddings(self, prompts: list[str]):
        import torch

        max_len = getattr(self.model.config.text_config, "max_position_embeddings", 77)
        tokens = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        with torch.no_grad():
            emb = _embedding(self.model.get_text_features(**tokens)).float()
        return torch.nn.functional.normalize(emb, dim=-1)

    def image_embeddings(self, frames):
        """L2-normalised CLIP image embeddings ``(F, D)`` of a uint8 video ``(F, H, W, 3)``."""
        import torch

        video = _video(frames, "ClipScorer")
        if video.shape[-1] == 1:
            video = np.repeat(video, 3, axis=-1)
        embs = []
        for i in range(0, len(video), self.batch_size):
            batch = list(video[i : i + self.batch_size])
            pixels = self.image_processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            with torch.no_grad():
                embs.append(_embedding(self.model.get_image_features(pixel_values=pixels)).float())
        return torch.nn.functional.normalize(torch.cat(embs), dim=-1)

    def text_embeddings(self, prompts: str | list[str]):
        """L2-normalised CLIP text embeddings ``(P, D)``."""
        return self._text_embeddings([prompts] if isinstance(prompts, str) else list(prompts))

    def text_alignment(self, frames, prompt: str, scale: float = 100.0) -> float:
        """Mean cosine similarity between each frame's embedding and the prompt's, times ``scale``."""
        img = self.image_embeddings(frames)
        txt = self.text_embeddings(prompt)
        return float((img @ txt[0]).mean() * scale)

    def frame_consistency(self, frames, scale: float = 100.0, pairs: str = "all") -> float:
        """Mean cosine similarity between frame embeddings, times ``scale``.

        ``pairs="all"`` averages over all pairs ``i < j``; ``"consecutive"`` over ``(n, n+1)``.
        """
        import torch

        img = self.image_embeddings(frames)
        if len(img) < 2:
            raise ValueError(f"frame_consistency: need at least 2 frames, got {len(img)}")
        sim = img @ img.T
        if pairs == "all":
            i, j = torch.triu_indices(len(img), len(img), offset=1)
            values = sim[i, j]
        elif pairs == "consecutive":
            values = torch.diagonal(sim, offset=1)
        else:
            raise ValueError(f"frame_consistency: pairs must be 'all' or 'consecutive', got {pairs!r}")
        return float(values.mean() * scale)
