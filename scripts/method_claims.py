"""Two method claims measured on the tiny world (`assets/world/`): SAVE tuning vs the untuned model
for motion faithfulness of the edit, and STEM inversion vs DDIM inversion for reconstruction.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/method_claims.py              # both (≈ 15–25 min on CPU)
    OMP_NUM_THREADS=1 .venv/bin/python scripts/method_claims.py --only stem  # reconstruction only
    OMP_NUM_THREADS=1 .venv/bin/python scripts/method_claims.py --only save  # SAVE tuning only

Writes (merges into) `assets/results/method_claims.json` and prints the tables of `docs/world.md`
("SAVE and STEM on the world"); `tests/test_world_method_claims.py` asserts what holds on every seed.

Protocol (fixed before measuring):
- **SAVE**: sources = the first `--save-sources` pairs of `edit_pairs(0)` (each with its fixed
  target); the clip = `ClipDataset("samples/pan_<source>.mp4", source caption, 8 frames, 32×32)`;
  `SAVEModule(model="tiny-world", adapter="spectral", temporal="full", frame_attention="first")`
  trained `--save-steps` steps (batch 1, the clip repeated) with `lr_delta`/`lr_temporal` as given,
  `seed` = the SAVE seed (per-step noise/timesteps). Untuned baseline: the inflated world
  `parts.inflate("first")` (zero-initialised temporal attention = the image model with
  `first` frame attention). Edits as in the world protocol: DDIM inversion at CFG 1 with the source
  caption, 10 steps, CFG 4, the target's caption. Metrics: fraction of frames classified as the
  target (aligned), warping error under `ClipDataset.flow(0)` (the pan's ground-truth flow),
  `pan_tracking` of the target photo, `flicker`, and the reconstruction's min PSNR.
- **STEM vs DDIM**: reconstruction (inversion + CFG-1 sampling with the source caption) of the
  pans; DDIM with `first` and `per_frame` frame attention vs `STEMInversion(K, tau=0.01, iters=5,
  seed=s)` (STEM attention during inversion and reconstruction); per-frame PSNR.
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

from data.photos import PHOTOS  # noqa: E402
from modules.world_eval import (classify_frames, edit_pairs, edit_pan, flicker, load_pan,  # noqa: E402
                                pan_tracking, photo_windows)

OUT = Path(__file__).resolve().parent.parent / "assets" / "results" / "method_claims.json"

EDIT_STEPS, EDIT_CFG = 10, 4.0
STEM_PANS = ("astronaut", "chelsea", "coffee", "rocket")


# ------------------------------------------------------------------------------------ claim 1: SAVE
def pan_dataset(source: str):
    from data.clip_dataset import ClipDataset

    return ClipDataset(f"samples/pan_{source}.mp4", prompt=PHOTOS[source], num_frames=8, height=32, width=32)


class ClipRepeat(torch.utils.data.Dataset):
    """The clip (`pixel_values` (3, F, H, W)) with its caption, repeated `n` times."""

    def __init__(self, pixels: torch.Tensor, prompt: str, n: int):
        self.pixels, self.prompt, self.n = pixels, prompt, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"pixel_values": self.pixels.clone(), "prompt": self.prompt, "index": 0}


def edit_metrics(res, target: str, flow, wins) -> dict:
    from modules.metrics import psnr, warping_error

    vid = res.edits[PHOTOS[target]]
    labels, _ = classify_frames(vid, windows=wins)
    return {
        "target_frames": sum(lab == target for lab in labels) / len(labels),
        "warp_error": float(warping_error(res.source[0], vid[0], flow)[0]),
        "tracking": pan_tracking(vid, target, windows=wins),
        "flicker": flicker(vid),
        "recon_psnr_min": float(min(psnr(res.source[0], res.reconstruction[0]))),
    }


def tune_save(source: str, steps: int, seed: int, lr_delta: float, lr_temporal: float, root: str):
    """SAVE-tune the world on the pan over `source` (its caption); returns the module."""
    import lightning as L
    from torch.utils.data import DataLoader

    from modules.save import SAVEModule

    ds = pan_dataset(source)
    torch.manual_seed(seed)
    module = SAVEModule(model="tiny-world", adapter="spectral", temporal="full", frame_attention="first",
                        lr_delta=lr_delta, lr_temporal=lr_temporal, seed=seed)
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, max_epochs=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=root,
                        limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, DataLoader(ClipRepeat(ds[0]["pixel_values"], PHOTOS[source], steps), batch_size=1))
    return module.eval()


@torch.no_grad()
def save_study(sources: int = 3, seeds=(0, 1), steps: int = 60, lr_delta: float = 1e-2, lr_temporal: float = 1e-3,
               root: str = "/tmp/method_claims_save", log=print) -> dict:
    from modules.models import load_parts

    wins = photo_windows()
    pairs = edit_pairs(0)[:sources]
    rows = []
    parts = load_parts("tiny-world")
    base = parts.inflate("first")  # zero-initialised temporal attention: the untuned world
    for src, tgt in pairs:
        flow = pan_dataset(src).flow(0)
        t0 = time.time()
        res = edit_pan(parts, src, [tgt], "first", EDIT_STEPS, EDIT_CFG, reconstruct=True, video_unet=base)
        rows.append({"model": "untuned", "seed": None, "source": src, "target": tgt,
                     **edit_metrics(res, tgt, flow, wins)})
        log(f"untuned {src}->{tgt}: {fmt(rows[-1])} ({time.time() - t0:.0f}s)")
        for seed in seeds:
            t0 = time.time()
            with torch.enable_grad():
                module = tune_save(src, steps, seed, lr_delta, lr_temporal, root)
            t_train = time.time() - t0
            res = edit_pan(module.spec, src, [tgt], "first", EDIT_STEPS, EDIT_CFG, reconstruct=True,
                           video_unet=module.video_unet)
            deltas = [float(m["delta"].abs().max()) for m in module.spectral_summary().values()]
            rows.append({"model": "save", "seed": seed, "source": src, "target": tgt,
                         "train_s": round(t_train, 1), "max_abs_delta": max(deltas),
                         **edit_metrics(res, tgt, flow, wins)})
            log(f"save s{seed} {src}->{tgt}: {fmt(rows[-1])} (train {t_train:.0f}s, max|δ| {max(deltas):.3g}, "
                f"total {time.time() - t0:.0f}s)")
            del module
    keys = ("target_frames", "warp_error", "tracking", "flicker", "recon_psnr_min")
    summary = {"untuned": {k: float(np.mean([r[k] for r in rows if r["model"] == "untuned"])) for k in keys}}
    for seed in seeds:
        summary[f"save/seed{seed}"] = {k: float(np.mean([r[k] for r in rows if r["seed"] == seed])) for k in keys}
    return {"rows": rows, "summary": summary, "pairs": pairs, "seeds": list(seeds), "steps": steps,
            "lr_delta": lr_delta, "lr_temporal": lr_temporal, "edit_steps": EDIT_STEPS, "edit_cfg": EDIT_CFG}


def fmt(r: dict) -> str:
    return (f"target {r['target_frames']:.2f} warp {r['warp_error']:.4f} track {r['tracking']:.2f} "
            f"flicker {r['flicker']:.4f} recon {r['recon_psnr_min']:.1f}")


# ----------------------------------------------------------------------- claim 2: STEM vs DDIM recon
@torch.no_grad()
def reconstruction_psnr(parts, video_unet, pan: str, num_steps: int, stem: dict | None = None) -> list[float]:
    """Per-frame PSNR (dB) of inversion + CFG-1 reconstruction of the pan with its caption."""
    from modules.callbacks.stem import STEMInversion
    from modules.editing import EditConfig, edit_clip
    from modules.metrics import psnr

    callbacks = [STEMInversion(**stem)] if stem else []
    cfg = EditConfig(edit_prompts=[], num_inference_steps=num_steps, guidance_scale=1.0, reconstruct=True)
    parts.model = video_unet
    res = edit_clip(parts, load_pan(pan), PHOTOS[pan], cfg, callbacks, progress=False)
    return [float(x) for x in psnr(res.source[0], res.reconstruction[0])]


def stem_study(pans=STEM_PANS, steps=(20, 50), bases=(64, 256), seeds=(0, 1, 2), log=print) -> dict:
    from modules.models import load_parts

    parts = load_parts("tiny-world")
    vu = parts.inflate("first", temporal=False)
    rows = []
    for n in steps:
        for pan in pans:
            t0 = time.time()
            for mode in ("first", "per_frame"):
                vu.set_frame_attention(mode)
                p = reconstruction_psnr(parts, vu, pan, n)
                rows.append({"steps": n, "pan": pan, "method": f"ddim/{mode}", "seed": None, "psnr": p})
            vu.set_frame_attention("first")
            for k in bases:
                for s in seeds:
                    p = reconstruction_psnr(parts, vu, pan, n, {"num_bases": k, "tau": 0.01, "iters": 5, "seed": s})
                    rows.append({"steps": n, "pan": pan, "method": f"stem/K{k}", "seed": s, "psnr": p})
            log(f"{n} steps {pan}: " + ", ".join(
                f"{r['method']}{'' if r['seed'] is None else '/s' + str(r['seed'])} {np.mean(r['psnr']):.2f}"
                for r in rows if r["steps"] == n and r["pan"] == pan) + f" ({time.time() - t0:.0f}s)")
    for r in rows:
        r["mean"], r["min"] = float(np.mean(r["psnr"])), float(np.min(r["psnr"]))
    return {"rows": rows, "pans": list(pans), "steps": list(steps), "bases": list(bases), "seeds": list(seeds)}


# ------------------------------------------------------------------------------------------ output
def print_save(res: dict) -> None:
    print(f"\nSAVE ({res['steps']} steps, lr δ {res['lr_delta']}, lr temporal {res['lr_temporal']}) vs untuned; "
          f"edits {res['edit_steps']} steps CFG {res['edit_cfg']}, frame attention first")
    print("| source → target | model | target frames | warp error | tracking | flicker | recon min PSNR |")
    print("|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        name = "untuned" if r["model"] == "untuned" else f"SAVE seed {r['seed']}"
        print(f"| {r['source']} → {r['target']} | {name} | {r['target_frames']:.0%} | {r['warp_error']:.4f} | "
              f"{r['tracking']:.2f} | {r['flicker']:.4f} | {r['recon_psnr_min']:.1f} dB |")
    print("\n| mean over pairs | target frames | warp error | tracking | flicker | recon min PSNR |")
    print("|---|---|---|---|---|---|")
    for k, s in res["summary"].items():
        print(f"| {k} | {s['target_frames']:.1%} | {s['warp_error']:.4f} | {s['tracking']:.2f} | {s['flicker']:.4f} | "
              f"{s['recon_psnr_min']:.1f} dB |")


def print_stem(res: dict) -> None:
    print("\nReconstruction PSNR (dB), mean over frames (min over frames); STEM: mean over seeds "
          f"{res['seeds']} (range of the per-seed means)")
    methods = ["ddim/first", "ddim/per_frame"] + [f"stem/K{k}" for k in res["bases"]]
    print("| steps | pan | " + " | ".join(methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    for n in res["steps"]:
        for pan in res["pans"]:
            cells = []
            for m in methods:
                sel = [r for r in res["rows"] if r["steps"] == n and r["pan"] == pan and r["method"] == m]
                means = [r["mean"] for r in sel]
                mins = [r["min"] for r in sel]
                cell = f"{np.mean(means):.2f} ({np.min(mins):.2f})"
                if len(sel) > 1:
                    cell += f" [{min(means):.2f}–{max(means):.2f}]"
                cells.append(cell)
            print(f"| {n} | {pan} | " + " | ".join(cells) + " |")


def merge_write(key: str, value: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    data[key] = value
    OUT.write_text(json.dumps(data, indent=1) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["save", "stem"], default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save-sources", type=int, default=3)
    ap.add_argument("--save-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--save-steps", type=int, default=60)
    ap.add_argument("--lr-delta", type=float, default=1e-2)
    ap.add_argument("--lr-temporal", type=float, default=1e-3)
    ap.add_argument("--stem-pans", nargs="+", default=list(STEM_PANS))
    ap.add_argument("--stem-steps", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--stem-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--save-key", default="save", help="JSON key of the SAVE run (e.g. a stronger variant)")
    ap.add_argument("--print-only", action="store_true", help="print the tables of the existing JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.print_only:
        data = json.loads(OUT.read_text())
        for key in [k for k in data if k.startswith("save")]:
            print(f"\n[{key}]")
            print_save(data[key])
        if "stem" in data:
            print_stem(data["stem"])
        return
    if args.only in (None, "stem"):
        t0 = time.time()
        res = stem_study(args.stem_pans, args.stem_steps, (64, 256), args.stem_seeds)
        res["wall_s"] = round(time.time() - t0, 1)
        merge_write("stem", res)
        print_stem(res)
    if args.only in (None, "save"):
        t0 = time.time()
        res = save_study(args.save_sources, args.save_seeds, args.save_steps, args.lr_delta, args.lr_temporal)
        res["wall_s"] = round(time.time() - t0, 1)
        merge_write(args.save_key, res)
        print_save(res)


if __name__ == "__main__":
    main()
