"""Results page of the tiny world: samples grid, edit strip and the claim numbers.

    .venv/bin/python scripts/world_results.py                 # all: PNGs + numbers (≈ minutes on CPU)
    .venv/bin/python scripts/world_results.py --only samples  # just the samples grid

Writes `assets/results/world_samples.png` (each caption × a few seeds, CFG 4),
`assets/results/edit_strip.png` (source pan / reconstruction / edit under per-frame, `first` and
`sparse_causal` frame attention) and `assets/results/world_claims.json`, and prints the numbers that
`docs/world.md` quotes and `tests/test_world_claims.py` asserts.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from data.photos import PHOTOS  # noqa: E402
from modules.world_eval import (FRAME_MODES, classify_frames, edit_study, load_pan, photo_windows,  # noqa: E402
                                sample_images)

OUT = Path(__file__).resolve().parent.parent / "assets" / "results"


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def grid(rows: list[list[np.ndarray]], labels: list[str], scale: int = 3, label_w: int = 190, pad: int = 2) -> Image.Image:
    h, w = rows[0][0].shape[:2]
    h, w = h * scale, w * scale
    ncol = max(len(r) for r in rows)
    img = Image.new("RGB", (label_w + ncol * (w + pad), len(rows) * (h + pad)), "white")
    draw = ImageDraw.Draw(img)
    for i, (row, lab) in enumerate(zip(rows, labels)):
        y = i * (h + pad)
        draw.text((4, y + h // 2 - 6), lab, fill="black")
        for j, cell in enumerate(row):
            img.paste(Image.fromarray(cell).resize((w, h), Image.NEAREST), (label_w + j * (w + pad), y))
    return img


def samples(parts, seeds=(0, 1, 2, 3), steps=25, guidance=4.0) -> dict:
    prompts = list(PHOTOS.values())
    x = sample_images(parts, prompts, list(seeds), steps, guidance)
    wins = photo_windows()
    names = list(PHOTOS)
    labels, _ = classify_frames(x.transpose(0, 1), aligned=False, windows=wins)  # each sample as a "frame"
    own = [labels[i] == names[i // len(seeds)] for i in range(len(labels))]
    rows = [[to_uint8(x[i * len(seeds) + j]) for j in range(len(seeds))] for i in range(len(prompts))]
    OUT.mkdir(parents=True, exist_ok=True)
    grid(rows, prompts).save(OUT / "world_samples.png")
    acc = float(np.mean(own))
    print(f"samples: {len(own)} ({len(prompts)} captions x {len(seeds)} seeds, CFG {guidance}, {steps} DDIM steps): "
          f"{100 * acc:.1f}% nearest photo = own caption -> {OUT / 'world_samples.png'}")
    return {"sample_own_caption": acc, "sample_labels": labels}


def reconstruction(parts, steps=50) -> dict:
    from modules.metrics import psnr
    from modules.world_eval import edit_pan

    out = {}
    for name in PHOTOS:
        res = edit_pan(parts, name, [], "per_frame", steps, reconstruct=True)
        out[name] = [round(v, 2) for v in psnr(res.source[0], res.reconstruction[0]).tolist()]
        print(f"reconstruction {name:22s} min {min(out[name]):.1f} dB  mean {np.mean(out[name]):.1f} dB")
    return {"recon_psnr": out, "recon_steps": steps}


def edit_strip(study: dict, source: str, target: str) -> None:
    v = study["videos"]
    first = v[(FRAME_MODES[0], source)]
    rows = [[to_uint8(f) for f in first["source"][0].transpose(0, 1)],
            [to_uint8(f) for f in first["reconstruction"][0].transpose(0, 1)]]
    labels = [f"source: {PHOTOS[source]}", "reconstruction"]
    for mode in FRAME_MODES:
        rows.append([to_uint8(f) for f in v[(mode, source)][target][0].transpose(0, 1)])
        labels.append(f"edit ({mode}): {PHOTOS[target].replace('a photo of ', '')}")
    grid(rows, labels).save(OUT / "edit_strip.png")
    print(f"edit strip {source} -> {target} -> {OUT / 'edit_strip.png'}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-world")
    ap.add_argument("--only", choices=["samples", "recon", "edits"], default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--recon-steps", type=int, default=50, help="DDIM steps of the reconstruction check")
    ap.add_argument("--steps", type=int, default=10, help="DDIM steps of inversion/edits in the edit study")
    ap.add_argument("--guidance", type=float, default=4.0, help="CFG of the edits")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is fastest on a busy machine)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from modules.models import load_parts

    parts = load_parts(args.model)
    t0 = time.time()
    results = {"model": args.model}
    path = OUT / "world_claims.json"
    if path.exists():
        results = {**json.loads(path.read_text()), **results}
    if args.only in (None, "samples"):
        results.update(samples(parts))
    if args.only in (None, "recon"):
        results.update(reconstruction(parts, args.recon_steps))
    if args.only in (None, "edits"):
        study = edit_study(parts, tuple(args.seeds), num_steps=args.steps, guidance_scale=args.guidance)
        src, tgt = study["pairs"][args.seeds[0]][0]
        edit_strip(study, src, tgt)
        print("\nper (mode, seed): target_frames = fraction of edit frames whose aligned nearest photo is the target;")
        print("tracking = fraction of frames matching the target's pan window; flicker / warp_error: lower is steadier")
        for key, row in study["summary"].items():
            print(f"  {key:22s} " + "  ".join(f"{k} {val:.4f}" for k, val in row.items()))
        results.update({"edit_summary": study["summary"], "edit_rows": study["rows"],
                        "edit_pairs": {str(k): v for k, v in study["pairs"].items()},
                        "edit_steps": args.steps, "edit_guidance": args.guidance})
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"numbers -> {path}  ({time.time() - t0:.0f}s)")


if __name__ == "__main__":
    main()
