"""STEM's edit pass: STEM attention vs the model's own frame attention, measured on the tiny world.

For each bundled pan (default: astronaut, chelsea, coffee, rocket), model frame attention
(`per_frame`, `first`) and STEM seed (bases initialisation; default 0, 1, 2), at 10 DDIM steps,
K = 64, tau = 0.01, R = 5:

- `ddim`: DDIM inversion + CFG-1 reconstruction with the model's attention (no STEM);
- `stem_recon`: STEM inversion + CFG-1 reconstruction with STEM attention;
- `edit_path/<stem|model>`: STEM inversion, then the *edit* pass at CFG 1 with the source caption
  through `STEMInversion(edit_attention=...)` -- the edit path's own reconstruction;
- `edit/<stem|model>`: a real edit (the target of `modules.world_eval.edit_pairs(0)` for that source, CFG 4):
  fraction of frames classified as the target photograph (the world's rule) and warping error
  (ground-truth pan flow; METHODS.md's definition, `modules.metrics.warping_error`).

PSNR is the mean over frames (dB). Writes `benchmarks/stem_edit_attention.json` and prints a Markdown
table. Run: `OMP_NUM_THREADS=1 .venv/bin/python scripts/stem_edit_attention.py` (~10-20 min on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

PANS = ("astronaut", "chelsea", "coffee", "rocket")


@torch.no_grad()
def study(pans=PANS, frame_attentions=("per_frame", "first"), seeds=(0, 1, 2), steps: int = 10, num_bases: int = 64,
          edit_cfg: float = 4.0, log=print) -> dict:
    from data.photos import PHOTOS
    from modules.callbacks.stem import STEMInversion
    from modules.editing import EditConfig, edit_clip
    from modules.metrics import psnr, warping_error
    from modules.models import load_model
    from modules.world_eval import classify_frames, edit_pairs, load_pan, pan_flow, photo_windows

    spec = load_model("tiny-world")
    wins = photo_windows()
    flow = pan_flow()
    targets = dict(edit_pairs(0))
    rows = []

    def mean_psnr(a, b):
        return float(np.mean(psnr(a[0], b[0])))

    for pan in pans:
        pix, cap = load_pan(pan), PHOTOS[pan]
        tgt = targets[pan]
        for fa in frame_attentions:
            spec.model.set_frame_attention(fa)
            t0 = time.time()
            ddim = edit_clip(spec, pix, cap, EditConfig(num_inference_steps=steps), progress=False)
            rows.append({"pan": pan, "frame_attention": fa, "seed": None, "metric": "ddim",
                         "psnr": mean_psnr(ddim.source, ddim.reconstruction)})
            for seed in seeds:
                for ea in ("stem", "model"):
                    cb = STEMInversion(num_bases=num_bases, tau=0.01, iters=5, seed=seed, edit_attention=ea)
                    same = edit_clip(spec, pix, cap, EditConfig(edit_prompts=[cap], num_inference_steps=steps,
                                                                guidance_scale=1.0), [cb], progress=False)
                    if ea == "stem":
                        rows.append({"pan": pan, "frame_attention": fa, "seed": seed, "metric": "stem_recon",
                                     "psnr": mean_psnr(same.source, same.reconstruction)})
                    rows.append({"pan": pan, "frame_attention": fa, "seed": seed, "metric": f"edit_path/{ea}",
                                 "psnr": mean_psnr(same.source, same.edits[cap])})
                    edit = edit_clip(spec, pix, cap, EditConfig(edit_prompts=[PHOTOS[tgt]], num_inference_steps=steps,
                                                                guidance_scale=edit_cfg, reconstruct=False),
                                     [cb], progress=False)
                    vid = edit.edits[PHOTOS[tgt]]
                    labels, _ = classify_frames(vid, windows=wins)
                    frames = ((vid[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()
                    src = ((pix[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()
                    rows.append({"pan": pan, "frame_attention": fa, "seed": seed, "metric": f"edit/{ea}",
                                 "target": tgt, "target_frames": sum(lab == tgt for lab in labels) / len(labels),
                                 "warp_error": warping_error(src, frames, flow=flow, backward_flow=-flow)[0]})
            log(f"{pan:10s} {fa:10s} " + ", ".join(
                f"{r['metric']}{'' if r['seed'] is None else '/s' + str(r['seed'])} "
                + (f"{r['psnr']:.2f}" if "psnr" in r else f"{r['target_frames']:.2f}/{r['warp_error']:.4f}")
                for r in rows if r["pan"] == pan and r["frame_attention"] == fa) + f" ({time.time() - t0:.0f}s)")
    return {"rows": rows, "pans": list(pans), "frame_attentions": list(frame_attentions), "seeds": list(seeds),
            "steps": steps, "num_bases": num_bases, "edit_cfg": edit_cfg, "model": "tiny-world"}


def summarise(res: dict) -> str:
    rows = res["rows"]
    lines = ["| model frame attention | pan | DDIM recon | STEM recon | edit path, `stem` | edit path, `model` "
             "| edit → target frames `stem` / `model` | warp error `stem` / `model` |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]

    def m(sel, key):
        return float(np.mean([r[key] for r in sel])) if sel else float("nan")

    for fa in res["frame_attentions"]:
        for pan in res["pans"] + ["mean"]:
            sel = [r for r in rows if r["frame_attention"] == fa and (pan == "mean" or r["pan"] == pan)]
            get = lambda metric, key="psnr": m([r for r in sel if r["metric"] == metric], key)  # noqa: E731
            name = f"**{pan}**" if pan == "mean" else pan
            lines.append(
                f"| {fa} | {name} | {get('ddim'):.2f} | {get('stem_recon'):.2f} | {get('edit_path/stem'):.2f} | "
                f"{get('edit_path/model'):.2f} | {get('edit/stem', 'target_frames'):.0%} / "
                f"{get('edit/model', 'target_frames'):.0%} | {get('edit/stem', 'warp_error'):.4f} / "
                f"{get('edit/model', 'warp_error'):.4f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pans", nargs="+", default=list(PANS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--frame-attentions", nargs="+", default=["per_frame", "first"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--num-bases", type=int, default=64)
    ap.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "stem_edit_attention.json"))
    ap.add_argument("--print-only", action="store_true", help="re-print the table from --out")
    args = ap.parse_args(argv)
    if args.print_only:
        print(summarise(json.loads(Path(args.out).read_text())))
        return 0
    res = study(args.pans, args.frame_attentions, args.seeds, args.steps, args.num_bases)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(summarise(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
