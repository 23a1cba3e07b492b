"""Evaluation of the tiny world on the bundled pans: every window of the training photos, the
nearest-photo classifier and pan tracking, flicker, text-to-image sampling, and the edit study.
Shared by tests/test_world_claims.py and scripts/world_results.py (numbers in docs/world.md)."""
from __future__ import annotations

import time

import numpy as np
import torch

PAN_Y = 4  # the bundled pans at 32×32: frame n is the window of photo(name, 40) at (y=4, x=n)


def photo_windows(names: list[str] | None = None, size: int = 40, crop: int = 32) -> tuple[torch.Tensor, list[str]]:
    """Every `crop`×`crop` window of each training photo: `(P, size-crop+1, size-crop+1, 3, crop, crop)`
    in [-1, 1] (indexed `[photo, y, x]`), and the photo names."""
    from data.photos import PHOTOS, photo

    names = list(names or PHOTOS)
    imgs = torch.stack([torch.from_numpy(photo(n, size)).permute(2, 0, 1).float() / 127.5 - 1 for n in names])
    win = imgs.unfold(2, crop, 1).unfold(3, crop, 1)  # (P, 3, Y, X, crop, crop)
    return win.permute(0, 2, 3, 1, 4, 5).contiguous(), names


def load_pan(name: str, num_frames: int = 8, size: int = 32) -> torch.Tensor:
    """The bundled pan over photo `name` as `(1, 3, F, size, size)` in [-1, 1]."""
    from data.clip_dataset import ClipDataset
    from data.photos import PHOTOS

    ds = ClipDataset(f"samples/pan_{name}.mp4", prompt=PHOTOS[name], num_frames=num_frames, height=size, width=size)
    return ds[0]["pixel_values"][None]


def classify_frames(frames: torch.Tensor, aligned: bool = True, windows=None) -> tuple[list[str], torch.Tensor]:
    """Nearest training photo of each frame of a pan-shaped video `(3, F, 32, 32)` or `(1, 3, F, 32, 32)`
    by pixel L2 in [-1, 1]. `aligned=True`: frame n is compared with the window of every photo at
    the pan's position (y=4, x=n) — the rule of the edit claims; `aligned=False`: with the best
    window of every photo (any position). Returns (names per frame, distances (F, P))."""
    wins, names = windows if windows is not None else photo_windows()
    v = frames[0] if frames.ndim == 5 else frames
    v = v.float().transpose(0, 1)  # (F, 3, H, W)
    dists = []
    for n, f in enumerate(v):
        if aligned:
            ref = wins[:, PAN_Y, min(n, wins.shape[2] - 1)]  # (P, 3, h, w)
            dists.append(((ref - f) ** 2).flatten(1).mean(1))
        else:
            d = ((wins - f) ** 2).flatten(3).mean(3)  # (P, Y, X)
            dists.append(d.flatten(1).min(1).values)
    d = torch.stack(dists)
    return [names[i] for i in d.argmin(1).tolist()], d


def pan_tracking(frames: torch.Tensor, name: str, windows=None) -> float:
    """Fraction of frames whose best-matching window of photo `name` (any position) is the pan's
    window (y=4, x=n): 1.0 means the video shows that photo *moving with the pan*."""
    wins, names = windows if windows is not None else photo_windows()
    w = wins[names.index(name)]  # (Y, X, 3, h, w)
    v = (frames[0] if frames.ndim == 5 else frames).float().transpose(0, 1)
    hits = 0
    for n, f in enumerate(v):
        d = ((w - f) ** 2).flatten(2).mean(2)  # (Y, X)
        y, x = divmod(int(d.argmin()), d.shape[1])
        hits += int(y == PAN_Y and x == n)
    return hits / v.shape[0]


def pan_flow(num_frames: int = 8, size: int = 32) -> np.ndarray:
    """Ground-truth flow of the bundled pans at `size`: content moves 1 px left per frame."""
    flow = np.zeros((num_frames - 1, size, size, 2), np.float32)
    flow[..., 0] = -1.0 * size / 32
    return flow


def flicker(video: torch.Tensor) -> float:
    """Mean absolute difference (in [0, 1] units) between consecutive frames after undoing the pan
    (frame n+1 shifted right by 1 px, compared on the overlap)."""
    v = ((video[0] if video.ndim == 5 else video).float() + 1) / 2  # (3, F, H, W)
    return float((v[:, :-1, :, 1:] - v[:, 1:, :, :-1]).abs().mean())


def image_denoiser(unet):
    """`(z (B,3,H,W), t, cond) -> eps` for DDIMLoop on plain images."""
    return lambda z, t, cond: unet(z, t, encoder_hidden_states=cond).sample


@torch.no_grad()
def sample_images(parts, prompts: list[str], seeds: list[int], num_steps: int = 25, guidance_scale: float = 4.0,
                  size: int = 32) -> torch.Tensor:
    """Text-to-image samples `(len(prompts) * len(seeds), 3, size, size)` in [-1, 1], prompt-major."""
    from modules.sampling import DDIMLoop

    noise = torch.stack([torch.randn(3, size, size, generator=torch.Generator().manual_seed(s)) for s in seeds])
    zT = noise.repeat(len(prompts), 1, 1, 1)
    emb = parts.encode_prompt(prompts)["encoder_hidden_states"].repeat_interleave(len(seeds), 0)
    null = parts.encode_prompt([""])["encoder_hidden_states"].expand_as(emb)
    loop = DDIMLoop(image_denoiser(parts.unet), parts.scheduler, num_steps, progress=False)
    return loop.sample(zT, emb, uncond=null, guidance_scale=guidance_scale).clamp(-1, 1)


def edit_pan(parts, source: str, targets: list[str], frame_attention: str = "per_frame", num_steps: int = 20,
             guidance_scale: float = 4.0, reconstruct: bool = True, video_unet=None):
    """Invert the bundled pan over photo `source` with its caption and re-sample it with the captions
    of `targets` (CFG `guidance_scale`) under `frame_attention`. Returns the EditResult."""
    from data.photos import PHOTOS
    from modules.editing import EditConfig, edit_clip

    if video_unet is None:
        parts.inflate(frame_attention, temporal=False)
    else:
        video_unet.set_frame_attention(frame_attention)
        parts.model = video_unet
    cfg = EditConfig(edit_prompts=[PHOTOS[t] for t in targets], num_inference_steps=num_steps,
                     guidance_scale=guidance_scale, reconstruct=reconstruct)
    return edit_clip(parts, load_pan(source), PHOTOS[source], cfg, progress=False)


# The claims' fixed protocol (chosen before measuring; see docs/world.md).
EDIT_SOURCES = ["astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry", "retina"]
"""Sources of the edit claims: every photo except hubble_deep_field (near-black galaxies: its
inversion carries almost no structure for another caption to keep; excluded in advance, as the
prototype's galaxy-source edits failed)."""
FRAME_MODES = ("per_frame", "first", "sparse_causal")


def edit_pairs(seed: int) -> list[tuple[str, str]]:
    """Pairs (source, target) of seed `seed`: each source in EDIT_SOURCES with one target among the
    other seven photos, drawn with `random.Random(seed)`. Seed 0 is the classification claim's set."""
    import random

    from data.photos import PHOTOS

    rng = random.Random(seed)
    return [(s, rng.choice([t for t in PHOTOS if t != s])) for s in EDIT_SOURCES]


@torch.no_grad()
def edit_study(parts, seeds=(0, 1, 2), modes=FRAME_MODES, num_steps: int = 20, guidance_scale: float = 4.0,
               log=print) -> dict:
    """Edit every pair of every seed under every frame-attention mode; per (mode, seed): fraction of
    frames classified (aligned nearest photo) as the target, pan tracking of the target, flicker,
    warping error (ground-truth pan flow), and the reconstruction PSNR. One inversion per
    (source, mode) serves all of that source's targets."""
    from modules.metrics import psnr, warping_error

    wins = photo_windows()
    flow = pan_flow()
    video_unet = parts.inflate(modes[0], temporal=False)
    pairs = {s: edit_pairs(s) for s in seeds}
    rows, videos = [], {}
    for mode in modes:
        for src in EDIT_SOURCES:
            targets = sorted({t for s in seeds for (a, t) in pairs[s] if a == src})
            t0 = time.time()
            res = edit_pan(parts, src, targets, mode, num_steps, guidance_scale, reconstruct=True, video_unet=video_unet)
            rec_psnr = psnr(res.source[0], res.reconstruction[0]).tolist()
            from data.photos import PHOTOS

            videos[(mode, src)] = {"source": res.source, "reconstruction": res.reconstruction,
                                   **{t: res.edits[PHOTOS[t]] for t in targets}}

            for tgt in targets:
                vid = res.edits[PHOTOS[tgt]]
                labels, _ = classify_frames(vid, windows=wins)
                rows.append({
                    "mode": mode, "source": src, "target": tgt,
                    "target_frames": sum(lab == tgt for lab in labels) / len(labels),
                    "tracking": pan_tracking(vid, tgt, windows=wins),
                    "flicker": flicker(vid),
                    "warp_error": warping_error(res.source[0], vid[0], flow)[0],
                    "recon_psnr_min": min(rec_psnr),
                })
            log(f"{mode:14s} {src:22s} -> {targets}  recon min {min(rec_psnr):.1f} dB  ({time.time() - t0:.0f}s)")
    summary = {}
    for mode in modes:
        for s in seeds:
            sel = [r for r in rows if r["mode"] == mode and (r["source"], r["target"]) in pairs[s]]
            summary[f"{mode}/seed{s}"] = {k: float(np.mean([r[k] for r in sel]))
                                          for k in ("target_frames", "tracking", "flicker", "warp_error", "recon_psnr_min")}
    return {"rows": rows, "summary": summary, "videos": videos, "pairs": {s: pairs[s] for s in seeds},
            "num_steps": num_steps, "guidance_scale": guidance_scale}
