"""Optical flow in one place: estimation (OpenCV DIS / Farneback; RAFT from torchvision with a local
weights file), warps with validity masks (numpy for metrics, differentiable torch for guidance),
chaining of consecutive flows back to frame 0, and pixel → latent flow.

**Convention** (OpenCV's ``calcOpticalFlowFarneback(prev=n, next=n+1)``, the bundled
``data/samples/*.flow.npy``): a *forward* flow ``flow[n]`` is ``(H, W, 2)`` float32 ``(dx, dy)`` on
frame n's grid with

    frame_n(y, x) ≈ frame_{n+1}(y + dy, x + dx),

so ``warp(frame_{n+1}, flow[n])`` (sampling frame n+1 at ``(x + dx, y + dy)``) estimates frame n. A
*backward* flow ``back[n]`` lives on frame n+1's grid: ``frame_{n+1}(p) ≈ frame_n(p + back[n](p))``.
Channel 0 is dx (columns), channel 1 is dy (rows).

**Chaining**: ``compose(a, b)(p) = a(p) + b(p + a(p))`` (b sampled bilinearly, border values
extended beyond the frame): first a, then b. ``VideoFlow.to_first()`` chains the backward flows, so
each frame's grid maps to frame-0 coordinates (``p + D_j(p)``); ``VideoFlow.from_first()`` chains the
forward flows, so frame 0's grid maps into frame j. Each comes with a validity mask: every link of
the chain landed inside the frame. Out-of-frame points keep a displacement (the border's, extended):
Warped's GP noise simply evaluates its function there.

**Latent flow**: latent cell (i, j) covers the pixel block ``[f·i, f·i + f) × [f·j, f·j + f)`` (f = the
VAE factor, 8 for SD/SDXL, 1 for pixel-space models): the cell's flow is the block's mean pixel flow
divided by f; a cell is valid when every pixel of its block is.

``modules.metrics`` re-exports the numpy helpers (``optical_flow``, ``warp``, ``flow_consistency``,
``splat``) for its warping error; ``data.clip_dataset`` composes and resizes ground-truth flows with
``compose_flows`` / ``resize_crop_flow``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

FLOW_METHODS = ("dis", "farneback", "raft")


class FlowError(ValueError):
    pass


# -- estimation ------------------------------------------------------------------------------------
def _uint8_video(frames, what: str) -> np.ndarray:
    from modules.metrics import _video  # the shared uint8 coercion (accepts [-1, 1] tensors)

    return _video(frames, what)


def optical_flow(frames, method: str = "farneback", direction: str = "forward",
                 raft_weights: str | Path | None = None) -> np.ndarray:
    """Dense optical flow between consecutive frames of a uint8 video -> float32 ``(F-1, H, W, 2)``.

    ``method``: ``"farneback"`` (``cv2.calcOpticalFlowFarneback``; the warping-error metric's default),
    ``"dis"`` (``cv2.DISOpticalFlow``, medium preset; Warped's default) or ``"raft"`` (torchvision's
    RAFT-large with the state dict at ``raft_weights``; frames padded to multiples of 8).
    ``direction="forward"``: ``flow[n]`` lives on frame n's grid, ``frame_n(y, x) ≈ frame_{n+1}(y + dy, x + dx)``;
    ``"backward"``: ``flow[n]`` lives on frame n+1's grid, ``frame_{n+1}(y, x) ≈ frame_n(y + dy, x + dx)``.
    """
    if direction not in ("forward", "backward"):
        raise ValueError(f"optical_flow: direction must be 'forward' or 'backward', got {direction!r}")
    if method not in FLOW_METHODS:
        raise ValueError(f"optical_flow: unknown method {method!r}; use one of {FLOW_METHODS}")
    v = _uint8_video(frames, "optical_flow")
    if len(v) < 2:
        raise ValueError(f"optical_flow: need at least 2 frames, got {len(v)}")
    pairs = [(n, n + 1) if direction == "forward" else (n + 1, n) for n in range(len(v) - 1)]
    if method == "raft":
        return _raft_flow(v, pairs, raft_weights)
    import cv2

    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) if f.shape[-1] == 3 else f[..., 0] for f in v]
    h, w = gray[0].shape
    out = np.empty((len(v) - 1, h, w, 2), dtype=np.float32)
    if method == "farneback":
        levels = max(0, min(3, int(np.log2(max(1, min(h, w) / 8)))))
        win = max(5, min(15, min(h, w) // 4 * 2 + 1))
        for n, (i, j) in enumerate(pairs):
            out[n] = cv2.calcOpticalFlowFarneback(
                gray[i], gray[j], None, pyr_scale=0.5, levels=levels, winsize=win,
                iterations=5, poly_n=5, poly_sigma=1.1, flags=0,
            )
    else:
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        for n, (i, j) in enumerate(pairs):
            out[n] = dis.calc(gray[i], gray[j], None)
    return out


def _raft_flow(v: np.ndarray, pairs, weights) -> np.ndarray:
    """torchvision RAFT-large from a local state dict (never downloaded here)."""
    if weights is None:
        raise FlowError("optical flow 'raft' needs raft_weights: a local file with torchvision's raft_large "
                        "state dict (Raft_Large_Weights.DEFAULT, downloaded once on a machine with network); "
                        "or use flow 'dis' (default) / 'farneback', which need no weights")
    path = Path(weights)
    if not path.is_file():
        raise FlowError(f"raft_weights '{path}' is not a file; download torchvision's raft_large weights there "
                        "(torchvision.models.optical_flow.Raft_Large_Weights.DEFAULT.url) or use flow 'dis'")
    try:
        from torchvision.models.optical_flow import raft_large
    except ImportError:
        raise FlowError("optical flow 'raft' needs torchvision (pip install torchvision matching your torch); "
                        "or use flow 'dis' / 'farneback'") from None
    model = raft_large(weights=None, progress=False)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    x = torch.from_numpy(v).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    h, w = x.shape[-2:]
    ph, pw = (-h) % 8, (-w) % 8
    x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    out = []
    with torch.no_grad():
        for i, j in pairs:
            flow = model(x[i:i + 1], x[j:j + 1])[-1][0]  # (2, H, W), (dx, dy) with frame_i(p) ≈ frame_j(p + f)
            out.append(flow[:, :h, :w].permute(1, 2, 0).numpy())
    return np.stack(out).astype(np.float32)


# -- numpy warps (metrics) ---------------------------------------------------------------------------
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


def flow_consistency(flow_ab, flow_ba) -> np.ndarray:
    """Forward-backward consistency of a flow: boolean ``(H, W)`` mask on grid A.

    ``flow_ab`` (on grid A) maps A to B, ``flow_ba`` (on grid B) maps B back to A.  A pixel p is kept
    when p + w(p) lies inside the frame and, with ŵ = flow_ba sampled at p + w(p) (bilinear),
    ``|w + ŵ|² < 0.01 (|w|² + |ŵ|²) + 0.5`` (the standard threshold of Sundaram et al. 2010 /
    Ruder et al. 2016).  With A = frame n and B = frame n+1 the rejected pixels are those of frame n
    occluded in n+1; with A = n+1 and B = n, those disoccluded in n+1 (visible there, hidden in n).
    """
    fab = np.asarray(flow_ab, dtype=np.float32)
    fba = np.asarray(flow_ba, dtype=np.float32)
    if fab.ndim != 3 or fab.shape[-1] != 2 or fba.shape != fab.shape:
        raise ValueError(f"flow_consistency: flows must both be shaped (H, W, 2), got {fab.shape} and {fba.shape}")
    back, inside = warp(fba, fab, return_mask=True)
    sq = lambda x: (x.astype(np.float64) ** 2).sum(-1)  # noqa: E731
    return inside & (sq(fab + back) < 0.01 * (sq(fab) + sq(back)) + 0.5)


def splat(frame, flow, source_mask=None, min_weight: float = 0.5):
    """Forward-warp ``frame`` by ``flow`` (bilinear splatting): pixel p is moved to p + flow(p).

    ``frame`` is ``(H, W)`` or ``(H, W, C)``, ``flow`` ``(H, W, 2)`` on the frame's grid; pixels where
    ``source_mask`` is False are not moved.  Returns ``(warped float64 (H, W, C), valid (H, W) bool)``:
    each target pixel is the weight-normalised sum of what lands on it; ``valid`` marks targets that
    received a total bilinear weight ≥ ``min_weight`` (holes: disoccluded or entering the frame).
    """
    frame = np.asarray(frame, dtype=np.float64)
    if frame.ndim == 2:
        frame = frame[..., None]
    flow = np.asarray(flow, dtype=np.float64)
    h, w, c = frame.shape
    if flow.shape != (h, w, 2):
        raise ValueError(f"splat: flow must be shaped (H, W, 2) = ({h}, {w}, 2) like the frame, got {flow.shape}")
    keep = np.ones((h, w), bool) if source_mask is None else np.asarray(source_mask, bool)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
    tx, ty = gx + flow[..., 0], gy + flow[..., 1]
    x0, y0 = np.floor(tx), np.floor(ty)
    weight = np.zeros(h * w)
    acc = np.zeros((c, h * w))
    values = frame.reshape(-1, c)
    for ox in (0, 1):
        for oy in (0, 1):
            cx, cy = x0 + ox, y0 + oy
            wt = (1 - np.abs(tx - cx)) * (1 - np.abs(ty - cy))
            ok = keep & (wt > 0) & (cx >= 0) & (cx <= w - 1) & (cy >= 0) & (cy <= h - 1)
            idx = (cy[ok] * w + cx[ok]).astype(np.int64)
            wk = wt[ok]
            weight += np.bincount(idx, wk, minlength=h * w)
            for ch in range(c):
                acc[ch] += np.bincount(idx, wk * values[ok.ravel(), ch], minlength=h * w)
    valid = weight >= min_weight
    out = np.zeros((h * w, c))
    out[valid] = (acc[:, valid] / weight[valid]).T
    return out.reshape(h, w, c), valid.reshape(h, w)


def compose_flows(flows: np.ndarray) -> np.ndarray:
    """Compose consecutive flows ``(K, H, W, 2)`` (prev(p) ≈ next(p + flow)) into one ``(H, W, 2)``
    (numpy; the torch form with validity masks is :func:`compose`)."""
    import cv2

    total = flows[0].copy()
    h, w = total.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    for f in flows[1:]:
        moved = cv2.remap(f, gx + total[..., 0], gy + total[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        total = total + moved
    return total


def resize_crop_flow(flow: np.ndarray, height: int, width: int) -> np.ndarray:
    """Apply ``resize_center_crop`` geometry to a flow ``(N, H, W, 2)`` (vectors scaled too)."""
    import cv2

    n, h, w, _ = flow.shape
    if (h, w) == (height, width):
        return flow
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    sx, sy = new_w / w, new_h / h
    out = np.empty((n, new_h, new_w, 2), dtype=np.float32)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    for i in range(n):
        out[i] = cv2.resize(flow[i], (new_w, new_h), interpolation=interp)
    out[..., 0] *= sx
    out[..., 1] *= sy
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.ascontiguousarray(out[:, top : top + height, left : left + width])


# -- torch: differentiable sampling, chaining, latent flow -----------------------------------------------
def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """`(H, W, 2)` pixel coordinates (x, y) = (column, row)."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                            torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack([xs, ys], dim=-1)


def in_frame(coords: torch.Tensor, height: int, width: int, eps: float = 1e-3) -> torch.Tensor:
    """Boolean `(...)`: coordinates `(..., 2)` (x, y) inside `[0, W-1] × [0, H-1]`."""
    x, y = coords[..., 0], coords[..., 1]
    return (x >= -eps) & (x <= width - 1 + eps) & (y >= -eps) & (y <= height - 1 + eps)


def bilinear_sample(x: torch.Tensor, coords: torch.Tensor, padding: str = "zeros") -> tuple[torch.Tensor, torch.Tensor]:
    """Sample `x` `(N, C, H, W)` at pixel coordinates `coords` `(N, H', W', 2)` (x, y) bilinearly:
    `((N, C, H', W'), valid (N, H', W'))`. Differentiable in `x` and `coords`; exact at integer
    coordinates (the neighbours' weights are exactly 0). `padding`: "zeros" (outside neighbours count
    0) or "border" (coordinates clamped into the frame). `valid`: the point is inside the frame."""
    if padding not in ("zeros", "border"):
        raise ValueError(f"padding must be 'zeros' or 'border', got {padding!r}")
    n, c, h, w = x.shape
    if coords.shape[0] != n or coords.shape[-1] != 2 or coords.ndim != 4:
        raise FlowError(f"coords must be (N={n}, H', W', 2), got {tuple(coords.shape)}")
    coords = coords.to(x.dtype) if x.is_floating_point() else coords
    valid = in_frame(coords, h, w)
    cx, cy = coords[..., 0], coords[..., 1]
    if padding == "border":
        cx, cy = cx.clamp(0, w - 1), cy.clamp(0, h - 1)
    x0, y0 = cx.detach().floor(), cy.detach().floor()
    wx, wy = cx - x0, cy - y0
    flat = x.reshape(n, c, h * w)
    out = 0
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        xi, yi = x0 + dx, y0 + dy
        wgt = (wx if dx else 1 - wx) * (wy if dy else 1 - wy)
        inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
        idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long().reshape(n, 1, -1).expand(n, c, -1)
        vals = flat.gather(2, idx).reshape(n, c, *coords.shape[1:3])
        out = out + vals * (wgt * inside)[:, None]
    return out, valid


def warp_tensor(x: torch.Tensor, flow: torch.Tensor, padding: str = "zeros") -> tuple[torch.Tensor, torch.Tensor]:
    """Torch twin of :func:`warp`: sample `x` `(N, C, H, W)` at `p + flow(p)` for `flow` `(N, H', W', 2)`
    on the target grid (H', W' = H, W for a warp between frames): `(warped, valid)`, differentiable."""
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise FlowError(f"flow must be (N, H, W, 2), got {tuple(flow.shape)}")
    grid = pixel_grid(flow.shape[1], flow.shape[2], flow.device, flow.dtype)
    return bilinear_sample(x, grid + flow, padding)


def compose(a: torch.Tensor, b: torch.Tensor, valid_a: torch.Tensor | None = None,
            valid_b: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`(a ∘ b)(p) = a(p) + b(p + a(p))` for displacement fields `(N, H, W, 2)` (b sampled bilinearly with
    its border values extended): first a, then b. Returns `(displacement, valid)`: valid where a is,
    p + a(p) lands inside the frame, and b is valid there (nearest)."""
    n, h, w, _ = a.shape
    moved, inside = warp_tensor(b.permute(0, 3, 1, 2), a, padding="border")
    disp = a + moved.permute(0, 2, 3, 1)
    valid = inside if valid_a is None else inside & valid_a
    if valid_b is not None:
        pts = (pixel_grid(h, w, a.device, a.dtype) + a).round()
        xi = pts[..., 0].clamp(0, w - 1).long()
        yi = pts[..., 1].clamp(0, h - 1).long()
        vb = valid_b.reshape(n, -1).gather(1, (yi * w + xi).reshape(n, -1)).reshape(n, h, w)
        valid = valid & vb
    return disp, valid


def check_flow(flow: torch.Tensor, num_frames: int, height: int, width: int, name: str = "flow") -> torch.Tensor:
    """Refuse a flow that does not fit `num_frames` frames of `height × width`, or holds NaN/inf."""
    flow = torch.as_tensor(np.asarray(flow) if not isinstance(flow, torch.Tensor) else flow)
    expected = (num_frames - 1, height, width, 2)
    if tuple(flow.shape) != expected:
        raise FlowError(f"{name} must be (F-1, H, W, 2) = {expected} for {num_frames} frames of {height}×{width}, "
                        f"got {tuple(flow.shape)}; estimate it on the same frames (VideoFlow.estimate) or resize it "
                        "with modules.flow.resize_crop_flow")
    if not torch.isfinite(flow).all():
        bad = (~torch.isfinite(flow)).reshape(flow.shape[0], -1).any(1).nonzero().flatten().tolist()
        raise FlowError(f"{name} holds NaN or inf values (pairs {bad}); re-estimate it (modules.flow.optical_flow) "
                        "or fill the holes before sampling")
    return flow.float()


@dataclass
class VideoFlow:
    """Forward and backward flows of a video, `(F-1, H, W, 2)` float32 each (see the module docstring),
    in pixels of the grid they live on (the video's, or the latent grid after `to_latent`)."""

    forward: torch.Tensor
    backward: torch.Tensor

    def __post_init__(self):
        fwd, bwd = torch.as_tensor(self.forward), torch.as_tensor(self.backward)
        if fwd.ndim != 4 or fwd.shape[-1] != 2 or fwd.shape[0] < 1:
            raise FlowError(f"forward flow must be (F-1, H, W, 2) with F >= 2 frames, got {tuple(fwd.shape)}")
        self.forward = check_flow(fwd, fwd.shape[0] + 1, fwd.shape[1], fwd.shape[2], "forward flow")
        self.backward = check_flow(bwd, fwd.shape[0] + 1, fwd.shape[1], fwd.shape[2], "backward flow")

    @property
    def num_frames(self) -> int:
        return self.forward.shape[0] + 1

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.forward.shape[1:3])

    @classmethod
    def estimate(cls, frames, method: str = "dis", raft_weights=None) -> "VideoFlow":
        """Both directions between consecutive frames of a video (uint8 `(F, H, W, 3)` or `(3, F, H, W)` in [-1, 1])."""
        v = _uint8_video(frames, "VideoFlow.estimate")
        if len(v) < 2:
            raise FlowError(f"a video of {len(v)} frame has no motion to follow: warped sampling needs at least 2 "
                            "frames (restore a single image with modules.gp_finetune.restore)")
        fwd = optical_flow(v, method, "forward", raft_weights)
        bwd = optical_flow(v, method, "backward", raft_weights)
        return cls(torch.from_numpy(fwd), torch.from_numpy(bwd))

    @classmethod
    def translation(cls, num_frames: int, height: int, width: int, dy: float = 0.0, dx: float = 1.0) -> "VideoFlow":
        """The exact flow of content moving by (dy, dx) pixels per frame: frame_{n+1}(p) = frame_n(p − (dx, dy))."""
        fwd = torch.zeros(num_frames - 1, height, width, 2)
        fwd[..., 0], fwd[..., 1] = dx, dy
        return cls(fwd, -fwd)

    @classmethod
    def from_forward(cls, forward) -> "VideoFlow":
        """From forward flows only (e.g. a ground-truth `.flow.npy`): the backward flow on frame n+1's grid is
        minus the forward flow splatted there (exact for translations; approximate otherwise, holes filled
        by the nearest forward vector)."""
        fwd = torch.as_tensor(np.asarray(forward, dtype=np.float32))
        if fwd.ndim != 4 or fwd.shape[-1] != 2:
            raise FlowError(f"forward flow must be (F-1, H, W, 2), got {tuple(fwd.shape)}")
        check_flow(fwd, fwd.shape[0] + 1, fwd.shape[1], fwd.shape[2], "forward flow")
        bwd = []
        for f in fwd.numpy():
            moved, valid = splat(-f, f)
            moved = moved.astype(np.float32)
            moved[~valid] = -f[~valid]
            bwd.append(moved)
        return cls(fwd, torch.from_numpy(np.stack(bwd)))

    def check_frames(self, num_frames: int, height: int, width: int, what: str = "frames") -> None:
        if self.num_frames != num_frames or self.size != (height, width):
            raise FlowError(f"the flow is for {self.num_frames} frames of {self.size[0]}×{self.size[1]}, but the "
                            f"{what} are {num_frames} frames of {height}×{width}; estimate the flow on the same "
                            "frames (VideoFlow.estimate) at the same size")

    def to_latent(self, factor: int) -> "VideoFlow":
        """Flow on the latent grid: each `factor × factor` pixel block's mean flow divided by `factor`."""
        if factor == 1:
            return self
        h, w = self.size
        if h % factor or w % factor:
            raise FlowError(f"flow of {h}×{w} pixels is not divisible by the VAE factor {factor}")
        pool = lambda f: F.avg_pool2d(f.permute(0, 3, 1, 2), factor).permute(0, 2, 3, 1) / factor  # noqa: E731
        return VideoFlow(pool(self.forward), pool(self.backward))

    def _chain(self, flows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = self.size
        disp = [torch.zeros(1, h, w, 2)]
        valid = [torch.ones(1, h, w, dtype=torch.bool)]
        for f in flows:
            d, v = compose(f[None], disp[-1], None, valid[-1])
            disp.append(d)
            valid.append(v)
        return torch.cat(disp), torch.cat(valid)

    def to_first(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(D (F, H, W, 2), valid (F, H, W))`: point p of frame j is frame 0's `p + D[j](p)`
        (backward flows chained: D_j = compose(back_{j-1}, D_{j-1}))."""
        return self._chain(self.backward)

    def from_first(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(G (F, H, W, 2), valid)`: point p of frame 0 is frame j's `p + G[j](p)` (forward flows chained
        the other way: G_j = compose(G_{j-1}, fwd_{j-1}))."""
        h, w = self.size
        disp = [torch.zeros(1, h, w, 2)]
        valid = [torch.ones(1, h, w, dtype=torch.bool)]
        for f in self.forward:
            d, v = compose(disp[-1], f[None], valid[-1], None)
            disp.append(d)
            valid.append(v)
        return torch.cat(disp), torch.cat(valid)


def end_point_error(flow: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray,
                    valid: np.ndarray | None = None) -> float:
    """Mean end-point error (pixels) between two flows `(..., H, W, 2)` over `valid` pixels (all by default)."""
    a, b = np.asarray(flow, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise FlowError(f"flows must have the same shape, got {a.shape} and {b.shape}")
    epe = np.sqrt(((a - b) ** 2).sum(-1))
    return float(epe[valid].mean() if valid is not None else epe.mean())
