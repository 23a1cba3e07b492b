"""Video quality metrics shared by all editing methods.

Videos are uint8 numpy arrays ``(F, H, W, 3)`` (framework tensors ``(C, F, H, W)`` in [-1, 1]
are accepted too and converted with ``data.video_io.to_frames``).

Optical flow convention (the one of OpenCV's ``calcOpticalFlowFarneback(prev=n, next=n+1)`` and of
the bundled ``data/samples/*.flow.npy``): ``flow[n]`` is ``(H, W, 2)`` float32 ``(dx, dy)`` with

    frame_n(y, x) ≈ frame_{n+1}(y + dy, x + dx)

so ``warp(frame_{n+1}, flow[n])`` — which samples ``frame_{n+1}`` at ``(x + dx, y + dy)`` — is an
estimate of ``frame_n``, and ``splat(frame_n, flow[n])`` (moving each pixel by its flow) one of
``frame_{n+1}``.  ``warping_error`` follows METHODS.md: the input video's flow warps output frame n
onto n+1 (splatting), MSE over pixels that are in the frame and pass the forward-backward check.

PSNR and SSIM are computed by torchmetrics (SSIM: Gaussian window 11×11, σ 1.5).

CLIP scores (``ClipScorer``) follow the SAVE paper: text alignment is the mean cosine similarity
between each frame's image embedding and the prompt's text embedding, frame consistency the mean
cosine similarity between the image embeddings of all pairs of frames, both x100 by default.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# optical_flow, warp, flow_consistency and splat live in modules/flow.py (the one flow module); they are
# re-exported here for the warping error below and for existing imports.
from modules.flow import flow_consistency, optical_flow, splat, warp

__all__ = [
    "psnr",
    "ssim",
    "optical_flow",
    "warp",
    "flow_consistency",
    "splat",
    "warping_error",
    "reference_warping_error",
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


def _torch_video(x: np.ndarray):
    """uint8 ``(F, H, W, C)`` -> float64 torch ``(F, C, H, W)`` in [0, 255]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).to(torch.float64)


def psnr(a, b, data_range: float = 255.0) -> np.ndarray:
    """Per-frame PSNR in dB between two uint8 videos ``(F, H, W, 3)``; ``inf`` for identical frames.

    Computed by ``torchmetrics.functional.image.peak_signal_noise_ratio`` (float64, per frame).
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio

    a, b = _pair(a, b, "psnr")
    out = peak_signal_noise_ratio(_torch_video(a), _torch_video(b), data_range=float(data_range),
                                  reduction="none", dim=(1, 2, 3))
    return out.numpy().astype(np.float64).reshape(len(a))


SSIM_WINDOW, SSIM_SIGMA = 11, 1.5


def ssim(a, b) -> np.ndarray:
    """Per-frame SSIM of two uint8 videos ``(F, H, W, 3)`` with the standard Gaussian window (11×11,
    σ = 1.5, K1 = 0.01, K2 = 0.03, data range 255), as ``torchmetrics`` computes it
    (``structural_similarity_index_measure``: channels averaged; the borders are filled by reflection
    and included in the mean, where scikit-image's ``structural_similarity(gaussian_weights=True)``
    crops them -- both agree exactly on the interior)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    a, b = _pair(a, b, "ssim")
    h, w = a.shape[1:3]
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(
            f"ssim: frames of {h}x{w} are smaller than the {SSIM_WINDOW}x{SSIM_WINDOW} Gaussian window; "
            f"use frames of at least {SSIM_WINDOW}x{SSIM_WINDOW}"
        )
    out = structural_similarity_index_measure(
        _torch_video(a), _torch_video(b), gaussian_kernel=True, sigma=SSIM_SIGMA, kernel_size=SSIM_WINDOW,
        data_range=255.0, k1=0.01, k2=0.03, reduction="none",
    )
    return out.numpy().astype(np.float64).reshape(len(a))


# --------------------------------------------------------------------------------------------------
# optical flow and temporal consistency
# --------------------------------------------------------------------------------------------------


def warping_error(source_frames, output_frames, flow=None, backward_flow=None, return_masks: bool = False):
    """Temporal warping error of an edited video (METHODS.md, "Metrics (shared)").

    Direction: the *input* video's forward flow ``f_n`` (n -> n+1, see the module docstring) warps
    *output* frame n onto frame n+1 (forward bilinear splatting, :func:`splat`); the error of pair n is
    the mean squared error against output frame n+1 over its valid pixels, intensities in [0, 1].
    Valid: pixels of frame n that pass the forward-backward check with the input's backward flow
    ``b_n`` (n+1 -> n; :func:`flow_consistency`, i.e. not occluded in n+1 and not leaving the frame) are
    moved, and the pixels of frame n+1 that receive them (total weight ≥ 0.5) are scored -- so regions
    disoccluded in n+1 or entering the frame are left out.

    ``flow``/``backward_flow`` are ``(F-1, H, W, 2)`` (``backward_flow[n]`` on frame n+1's grid, as
    ``optical_flow(..., direction="backward")``); each one not given is estimated on the source video
    with :func:`optical_flow`.  Returns ``(mean over n, per-pair array of F-1 values)``, plus the
    ``(F-1, H, W)`` boolean masks of scored pixels on frames 1..F-1 with ``return_masks=True``.
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
    expected = (len(out) - 1, *out.shape[1:3], 2)
    flows = {}
    for name, value, direction in (("flow", flow, "forward"), ("backward_flow", backward_flow, "backward")):
        value = optical_flow(src, direction=direction) if value is None else np.asarray(value, dtype=np.float32)
        if value.shape != expected:
            raise ValueError(f"warping_error: {name} must be shaped (F-1, H, W, 2) = {expected}, got {value.shape}")
        flows[name] = value
    outf = out.astype(np.float64) / 255.0
    errors = np.empty(len(out) - 1, dtype=np.float64)
    masks = np.zeros(expected[:-1], dtype=bool)
    for n in range(len(out) - 1):
        visible = flow_consistency(flows["flow"][n], flows["backward_flow"][n])
        warped, mask = splat(outf[n], flows["flow"][n], source_mask=visible)
        masks[n] = mask
        if not mask.any():
            errors[n] = np.nan
            continue
        errors[n] = float(np.mean((warped - outf[n + 1])[mask] ** 2))
    mean = float(np.nanmean(errors)) if np.isfinite(errors).any() else float("nan")
    return (mean, errors, masks) if return_masks else (mean, errors)


def reference_warping_error(video, flow, reference: str = "first"):
    """Warped Diffusion's warping error (METHODS.md §4): per frame j ≥ 1, the mean squared difference
    between frame j warped onto the reference frame's grid (bilinear, sampled at the flow-mapped points)
    and the reference frame, over in-frame points (every link of the chained flow inside the frame).

    ``video``: a float tensor ``(C, F, H, W)`` (latents, or pixels — scale them as you report them);
    ``flow``: a ``modules.flow.VideoFlow`` on the same grid (latent flow for latents);
    ``reference``: ``"first"`` (frame 0, forward flows chained: ``VideoFlow.from_first``) or
    ``"previous"`` (frame j−1, its forward flow). Returns a float64 array of F−1 values (frames 1..F−1;
    NaN where no point stays in frame)."""
    import torch

    from modules.flow import bilinear_sample, pixel_grid

    if reference not in ("first", "previous"):
        raise ValueError(f"reference_warping_error: reference must be 'first' or 'previous', got {reference!r}")
    x = torch.as_tensor(video).detach().float()
    if x.ndim != 4:
        raise ValueError(f"reference_warping_error: video must be (C, F, H, W), got shape {tuple(x.shape)}")
    c, f, h, w = x.shape
    flow.check_frames(f, h, w, "video")
    if reference == "first":
        disp, valid = flow.from_first()
        disp, valid, ref = disp[1:], valid[1:], x[:, :1].expand(c, f - 1, h, w)
    else:
        disp, valid, ref = flow.forward, torch.ones(f - 1, h, w, dtype=torch.bool), x[:, :-1]
    grid = pixel_grid(h, w)
    warped, inside = bilinear_sample(x[:, 1:].transpose(0, 1), grid + disp.float())
    ok = (inside & valid)[:, None].float()
    err = ((warped - ref.transpose(0, 1)) ** 2 * ok).sum((1, 2, 3)) / (ok.sum((1, 2, 3)) * c)
    return err.double().numpy()


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


# --------------------------------------------------------------------------------------------------
# global motion by phase correlation (a measure no learned model provides)
# --------------------------------------------------------------------------------------------------

__all__ += ["phase_correlation", "global_displacement", "motion_error"]


def _gray(frames: np.ndarray) -> np.ndarray:
    """uint8 ``(F, H, W, C)`` -> float64 luminance ``(F, H, W)`` (ITU-R BT.601 weights)."""
    f = frames.astype(np.float64)
    return f[..., 0] if f.shape[-1] == 1 else f[..., :3] @ np.array([0.299, 0.587, 0.114])


def _parabolic(c_minus: float, c0: float, c_plus: float) -> float:
    """Offset of the vertex of the parabola through (-1, c_minus), (0, c0), (1, c_plus), in [-0.5, 0.5]."""
    den = c_minus - 2 * c0 + c_plus
    return 0.0 if den >= 0 else float(np.clip(0.5 * (c_minus - c_plus) / den, -0.5, 0.5))


def phase_correlation(a: np.ndarray, b: np.ndarray, window: bool = True) -> tuple[float, float, float]:
    """Global translation ``(dx, dy)`` taking image ``a`` to image ``b`` — ``b(y + dy, x + dx) ≈ a(y, x)``,
    the flow convention of this module — and the height of the correlation peak (1 for a pure
    circular shift, lower when content enters/leaves or changes).

    ``a``, ``b``: 2-D float arrays of the same shape. The normalised cross-power spectrum
    ``B·conj(A) / |B·conj(A)|`` is inverted by FFT; its peak is the shift, refined to sub-pixel by a
    parabola through the peak and its neighbours along each axis. ``window``: subtract the mean and
    apply a Hann window first (reduces the edge effects of non-circular shifts). Shifts are found
    modulo the frame size, in ``[-W/2, W/2)`` × ``[-H/2, H/2)``. Same sign convention as OpenCV's
    ``cv2.phaseCorrelate(a, b)``."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"phase_correlation: expected two 2-D images of the same shape, got {a.shape} and {b.shape}")
    h, w = a.shape
    if window:
        hann = np.outer(np.hanning(h), np.hanning(w))
        a, b = (a - a.mean()) * hann, (b - b.mean()) * hann
    cross = np.fft.fft2(b) * np.conj(np.fft.fft2(a))
    cross /= np.maximum(np.abs(cross), 1e-12)
    corr = np.real(np.fft.ifft2(cross))
    py, px = np.unravel_index(int(np.argmax(corr)), corr.shape)
    peak = float(corr[py, px])
    sx = px + _parabolic(corr[py, (px - 1) % w], peak, corr[py, (px + 1) % w])
    sy = py + _parabolic(corr[(py - 1) % h, px], peak, corr[(py + 1) % h, px])
    sx = sx - w if sx >= w / 2 else sx
    sy = sy - h if sy >= h / 2 else sy
    return float(sx), float(sy), peak


def global_displacement(video, window: bool = True) -> np.ndarray:
    """Per consecutive frame pair, the global displacement of the content ``(dx, dy)`` in pixels per
    frame (x right, y down) by ``phase_correlation`` on luminance -> float ``(F-1, 2)``. ``video``:
    uint8 ``(F, H, W, 3)`` or a ``(3, F, H, W)`` / ``(1, 3, F, H, W)`` tensor in [-1, 1]."""
    if hasattr(video, "ndim") and video.ndim == 5:
        if video.shape[0] != 1:
            raise ValueError(f"global_displacement: one video at a time, got a batch of {video.shape[0]}")
        video = video[0]
    g = _gray(_video(video, "global_displacement"))
    if len(g) < 2:
        raise ValueError(f"global_displacement: need at least 2 frames, got {len(g)}")
    return np.array([phase_correlation(g[n], g[n + 1], window)[:2] for n in range(len(g) - 1)], np.float64)


def motion_error(video, intended, window: bool = True) -> dict:
    """The measured global motion of ``video`` against the intended content displacement
    ``intended`` (``(dx, dy)`` px/frame, or one row per frame pair ``(F-1, 2)``).

    Returns a dict: ``displacement`` ``(F-1, 2)`` measured; ``endpoint_error`` ``(F-1,)`` the
    distance between measured and intended displacement; ``mean_endpoint_error``;
    ``direction_ok`` ``(F-1,)`` bool, the measured displacement within 45° of the intended one
    (for a diagonal, both components have the right sign; for an axis pan, the motion along the
    axis has the right sign and exceeds the motion across it) — all False where nothing was
    intended; ``direction_rate`` the fraction of pairs with ``direction_ok``; ``speed``
    ``(F-1,)`` measured ``|d|``; ``speed_error`` ``|mean |d| - mean |v||`` in px/frame;
    ``mean_speed`` the mean measured ``|d|``."""
    d = global_displacement(video, window)
    v = np.broadcast_to(np.asarray(intended, np.float64), d.shape)
    speed = np.linalg.norm(d, axis=1)
    vnorm = np.linalg.norm(v, axis=1)
    cos = np.where(vnorm > 0, (d * v).sum(1) / np.maximum(speed * vnorm, 1e-12), -1.0)
    direction_ok = (vnorm > 0) & (speed > 0) & (cos > np.cos(np.pi / 4))
    epe = np.linalg.norm(d - v, axis=1)
    return {
        "displacement": d, "endpoint_error": epe, "mean_endpoint_error": float(epe.mean()),
        "direction_ok": direction_ok, "direction_rate": float(direction_ok.mean()),
        "speed": speed, "mean_speed": float(speed.mean()), "speed_error": float(abs(speed.mean() - vnorm.mean())),
    }
