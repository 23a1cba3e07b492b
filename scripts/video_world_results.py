"""Results page of the tiny video world: a grid of generated clips, the claim numbers, timings.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/video_world_results.py               # everything
    OMP_NUM_THREADS=1 .venv/bin/python scripts/video_world_results.py --only grid   # one part
    .venv/bin/python scripts/video_world_results.py --print-only                    # re-print the JSON

Parts (each merged into `assets/results/video_world_claims.json` under its own key):

- `grid`: one row per motion (the eight pans at 2 px/frame, zoom in, zoom out, a still camera; row
  i over photo i mod 8; seed 0, 20 DDIM steps, CFG 4) -> `assets/results/video_world_grid.png`
  (frames left to right, the measured displacement beside each row) and `video_world_grid.mp4`
  (the clips tiled, 4 fps);
- `claims`: `modules.video_world.motion_study` over seeds 0, 1, 2 (the numbers
  `tests/test_video_world_claims.py` asserts);
- `recon`: DDIM inversion + reconstruction of every bundled pan at 20 and 50 steps;
- `timing`: sampling time of one 8-frame clip, 20 steps with CFG, on this machine.
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

from data.motion_clips import PAN_DIRECTIONS, Motion, motion_caption  # noqa: E402
from data.photos import PHOTOS  # noqa: E402
from modules.video_world import (CLAIM_CFG, CLAIM_SEEDS, CLAIM_SPEED, CLAIM_STEPS, motion_study,  # noqa: E402
                                 reconstruct_pan, sample_videos)

OUT = Path(__file__).resolve().parent.parent / "assets" / "results"
JSON = OUT / "video_world_claims.json"
GRID_MOTIONS = [Motion("pan", d, CLAIM_SPEED) for d in PAN_DIRECTIONS] + [Motion("zoom", "in"), Motion("zoom", "out"),
                                                                         Motion("static")]


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def grid(spec, scale: int = 3) -> dict:
    from modules.metrics import global_displacement

    names = list(PHOTOS)
    rows = [(names[i % len(names)], m) for i, m in enumerate(GRID_MOTIONS)]
    prompts = [motion_caption(p, m) for p, m in rows]
    t0 = time.time()
    videos = sample_videos(spec, prompts, seed=0)
    secs = time.time() - t0
    size = 32 * scale
    label_w, info_w, gap = 250, 190, 2
    img = Image.new("RGB", (label_w + 8 * (size + gap) + info_w, len(rows) * (size + gap)), "white")
    draw = ImageDraw.Draw(img)
    out_rows = []
    for r, ((p, m), v) in enumerate(zip(rows, videos)):
        y = r * (size + gap)
        d = global_displacement(v)
        mean = d.mean(0)
        draw.text((4, y + size // 2 - 12), prompts[r].replace(", ", ",\n"), fill="black")
        for f in range(v.shape[1]):
            tile = Image.fromarray(to_uint8(v[:, f])).resize((size, size), Image.NEAREST)
            img.paste(tile, (label_w + f * (size + gap), y))
        want = m.displacement
        draw.text((label_w + 8 * (size + gap) + 6, y + size // 2 - 12),
                  f"wanted ({want[0]:+.0f}, {want[1]:+.0f}) px/frame\nmeasured ({mean[0]:+.2f}, {mean[1]:+.2f})",
                  fill="black")
        out_rows.append({"prompt": prompts[r], "wanted": list(want), "measured_mean": mean.round(3).tolist(),
                         "measured": d.round(3).tolist()})
    OUT.mkdir(parents=True, exist_ok=True)
    img.save(OUT / "video_world_grid.png")
    # the clips tiled 4 across, upscaled ×4, as an mp4
    from data.video_io import write_video

    cols, up = 4, 4
    n = len(rows)
    tiles = torch.nn.functional.interpolate(videos.transpose(1, 2).flatten(0, 1), scale_factor=up, mode="nearest")
    tiles = tiles.unflatten(0, (n, videos.shape[2]))  # (n, F, 3, H, W)
    pad = cols * ((n + cols - 1) // cols) - n
    if pad:
        tiles = torch.cat([tiles, torch.ones_like(tiles[:pad])])
    h = tiles.shape[-1]
    frames = tiles.unflatten(0, (-1, cols)).permute(2, 0, 4, 1, 5, 3).reshape(videos.shape[2], -1, cols * h, 3)
    write_video(OUT / "video_world_grid.mp4", ((frames.clamp(-1, 1) + 1) * 127.5).round().byte().numpy(), fps=4)
    print(f"grid: {n} clips in {secs:.0f}s -> {OUT / 'video_world_grid.png'}, {OUT / 'video_world_grid.mp4'}")
    for row in out_rows:
        print(f"  {row['prompt']:50s} wanted {row['wanted']}  measured {row['measured_mean']}")
    return {"rows": out_rows, "seed": 0, "num_steps": CLAIM_STEPS, "guidance_scale": CLAIM_CFG}


def claims(spec, seeds) -> dict:
    res = motion_study(spec, seeds=seeds)
    return {"summary": res["summary"], "rows": res["rows"], "num_steps": res["num_steps"],
            "guidance_scale": res["guidance_scale"], "speed": res["speed"]}


def recon(spec) -> dict:
    out = {}
    for steps in (20, 50):
        for name in PHOTOS:
            t0 = time.time()
            p = reconstruct_pan(spec, name, steps)
            out[f"{name}/{steps}"] = {"min": float(p.min()), "mean": float(p.mean())}
            print(f"recon {steps} steps {name:22s} min {p.min():.2f} dB mean {p.mean():.2f} dB ({time.time() - t0:.0f}s)")
    return out


def timing(spec, repeats: int = 3) -> dict:
    secs = []
    for r in range(repeats):
        t0 = time.time()
        sample_videos(spec, [motion_caption("chelsea", Motion("pan", "left", 2))], seed=r)
        secs.append(time.time() - t0)
    load = os.getloadavg()[0]
    print(f"sampling one 8×32×32 clip, {CLAIM_STEPS} steps, CFG {CLAIM_CFG}: {min(secs):.1f}s best of {repeats} "
          f"(load average {load:.1f}, {torch.get_num_threads()} threads)")
    return {"seconds": secs, "best_s": min(secs), "load_average": load, "threads": torch.get_num_threads()}


def print_tables(data: dict) -> None:
    if "claims" in data:
        print("\nseed | named photo (frames) | direction right (pairs) | speed error px/frame (mean, max) | "
              "mean speed with motion words | without")
        for k, s in data["claims"]["summary"].items():
            print(f"{k:5s} | {s['photo_frames']:.1%} | {s['direction_rate']:.1%} | {s['speed_error']:.2f}, "
                  f"{s['max_speed_error']:.2f} | {s['mean_speed']:.2f} | {s['plain_mean_speed']:.2f}")
    if "recon" in data:
        for steps in (20, 50):
            vals = {k.split("/")[0]: v for k, v in data["recon"].items() if k.endswith(f"/{steps}")}
            if vals:
                print(f"recon {steps} steps: min over frames " + ", ".join(f"{k} {v['min']:.1f}" for k, v in vals.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["grid", "claims", "recon", "timing"], action="append")
    ap.add_argument("--model", default="tiny-video-world", help="preset name or diffusers folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(CLAIM_SEEDS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--print-only", action="store_true", help="print the tables of the existing JSON")
    ap.add_argument("--out", default=None, help="folder of the PNG, mp4 and JSON (default assets/results)")
    args = ap.parse_args()
    global OUT, JSON
    OUT = Path(args.out) if args.out else OUT
    JSON = OUT / "video_world_claims.json"
    data = json.loads(JSON.read_text()) if JSON.exists() else {}
    if args.print_only:
        print_tables(data)
        return
    torch.set_num_threads(args.threads)
    from modules.models.spec import load_model

    spec = load_model(args.model)
    parts = args.only or ["grid", "claims", "recon", "timing"]
    for part in parts:
        t0 = time.time()
        if part == "grid":
            data["grid"] = grid(spec)
        elif part == "claims":
            data["claims"] = claims(spec, args.seeds)
        elif part == "recon":
            data["recon"] = recon(spec)
        else:
            data["timing"] = timing(spec)
        data.setdefault("wall_s", {})[part] = round(time.time() - t0, 1)
        OUT.mkdir(parents=True, exist_ok=True)
        JSON.write_text(json.dumps(data, indent=1) + "\n")
    print_tables(data)


if __name__ == "__main__":
    main()
