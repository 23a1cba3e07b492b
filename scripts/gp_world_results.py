"""Claims of the two conditional worlds (issue 12, docs/gp.md): the tiny world fine-tuned with GP noise
for inpainting (`tiny-world-inpaint`) and ×4 super-resolution (`tiny-world-sr`), their white-noise
twins, and the trivial baselines, on held-out crops of the photographs over several seeds.

    .venv/bin/python scripts/gp_world_results.py \\
        --white-inpaint runs/gp-inpaint-world-white/export --white-sr runs/gp-sr-world-white/export

Held-out crops: the photographs resized to 48 (shorter side; training resizes to 40, so no training
window is seen again), random 32×32 crops, the seed's own crops and masks. Inpainting masks: a
rectangle (each side 30–60% of the image) — the classic hole; brush strokes and outpainting frames
are reported too. Each model samples from the noise it was trained with (GP or white),
DDIM `--steps` steps, CFG 1 (the caption conditions; the image conditions through the channels).
PSNR over the restored region (inpainting: the mask; SR: the whole image) against the ground truth.
Baselines: bicubic upsampling (SR), the mask filled with the mean colour of the known pixels.

Writes `assets/results/gp_world_claims.json` (per seed and mask kind: mean PSNR of each model and of
the baseline, per-item numbers) and `assets/results/gp_world_{inpainting,super_resolution}.png` (the
first seed: input | GP | white | ground truth | baseline per row). `--only TASK` evaluates one task and
merges it into an existing JSON (e.g. while the other task's white twin is still training). `tests/test_gp_world_claims.py` asserts what held on
every seed.
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

from data.restoration import PhotoSource, RestorationDataset, downsample, random_mask  # noqa: E402
from modules.gp_finetune import baseline, load_finetuned, region_psnr, restore, upsample  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "assets" / "results"
HELDOUT_RESIZE = 48  # training crops come from the photographs resized to 40
SIZE = 32
SCALE = 4
MASK_KINDS = ("rectangle", "brush", "outpaint")


def heldout_items(seed: int, n: int, size: int = SIZE, resize: int = HELDOUT_RESIZE) -> dict:
    """`n` held-out crops (`pixel_values` (n, 3, size, size) in [-1, 1], `caption`), seed-specific."""
    ds = RestorationDataset(PhotoSource(), "inpainting", size=size, resize=resize, length=n, seed=10_000 + seed)
    items = [ds[i] for i in range(n)]
    return {"pixel_values": torch.stack([it["pixel_values"] for it in items]),
            "caption": [it["caption"] for it in items], "photo": [int(it["index"]) for it in items]}


def heldout_masks(seed: int, n: int, kind: str, size: int = SIZE) -> torch.Tensor:
    """`(n, 1, size, size)` masks of one kind (1 = regenerate); rectangles 30–60% of each side."""
    g = torch.Generator().manual_seed(20_000 + 97 * seed + MASK_KINDS.index(kind))
    if kind != "rectangle":
        return torch.stack([random_mask(size, size, g, kind=kind)[0] for _ in range(n)])
    out = torch.zeros(n, 1, size, size)
    for i in range(n):
        rh, rw = (int(torch.randint(round(0.3 * size), round(0.6 * size) + 1, (), generator=g)) for _ in range(2))
        y, x = (int(torch.randint(0, size - s + 1, (), generator=g)) for s in (rh, rw))
        out[i, :, y:y + rh, x:x + rw] = 1
    return out


def evaluate(spec, card: dict, items: dict, *, mask: torch.Tensor | None = None, steps: int = 20, seed: int = 0,
             noise: str | None = None, samples: int = 1) -> dict:
    """Restore `items` with a fine-tuned world; per-item PSNR of the restored region and of the baseline.
    `samples` > 1 also scores the mean of that many restorations per item (`psnr_mean`: an estimate of
    the model's conditional mean, which a single sample cannot match even for a perfect model)."""
    task, px = card["task"], items["pixel_values"]
    noise = noise or card.get("noise", "gp")
    n, k = px.shape[0], max(1, int(samples))
    rep = lambda x: x.repeat(k, *([1] * (x.ndim - 1)))  # noqa: E731  (draw j of item i at j·n + i)
    caps = list(items["caption"]) * k
    if task == "super_resolution":
        scale = int(card.get("scale", SCALE))
        low = downsample(px, scale)
        out = restore(spec, task, caps, low_res=rep(low), scale=scale, noise=noise, num_inference_steps=steps, seed=seed)
        base, region, inp = baseline(task, low_res=low, scale=scale), None, upsample(low, scale)[:, :, 0]
    else:
        out = restore(spec, task, caps, pixels=rep(px), mask=rep(mask), noise=noise, num_inference_steps=steps,
                      seed=seed)
        base = baseline(task, pixels=px, mask=mask)
        region, inp = mask > 0.5, px * (mask <= 0.5)
    draws = out.reshape(k, n, *out.shape[1:])
    res = {"restored": draws[0], "baseline": base, "input": inp,
           "psnr": region_psnr(draws[0], px, region).tolist(), "psnr_baseline": region_psnr(base, px, region).tolist(),
           # against the next item's ground truth (same region): how much the restoration owes to its own input
           "psnr_other": region_psnr(draws[0], px.roll(1, 0), region).tolist()}
    if k > 1:
        res["psnr_mean"] = region_psnr(draws.mean(0), px, region).tolist()
    return res


def one_step_x0(spec, card: dict, items: dict, *, mask: torch.Tensor | None = None, ts=(200, 500, 800, 950),
                seed: int = 0, base=None) -> dict:
    """The diagnostic behind the recipes' loss weighting: the ground truth noised to each t with the
    model's training noise, one network call, PSNR of the x̂0 prediction (clamped) over the restored
    region — with the conditioning (`cond`), with the conditioning channels zeroed (`cond_zeroed`), and of
    the unconditional `base` world (`base`, when given). A world that uses its image channels must have
    x̂0 at high t near or above the baseline; the sampler starts there."""
    from modules.gp_finetune import condition_latents, initial_noise

    task, px = card["task"], items["pixel_values"]
    region = None if mask is None else mask > 0.5
    if task == "super_resolution":
        concat = condition_latents(spec, task, low_res=downsample(px, int(card.get("scale", SCALE))),
                                   scale=int(card.get("scale", SCALE)))
    else:
        concat = condition_latents(spec, task, pixels=px, mask=mask)
    z0 = px[:, :, None]
    noise = initial_noise(tuple(z0.shape), card.get("noise", "gp"), 30_000 + seed)
    cond = spec.encode_prompt(list(items["caption"]), size=tuple(px.shape[-2:]))
    variants = {"cond": (spec, cond.with_(concat_latents=concat)),
                "cond_zeroed": (spec, cond.with_(concat_latents=torch.zeros_like(concat)))}
    if base is not None:
        variants["base"] = (base, base.encode_prompt(list(items["caption"]), size=tuple(px.shape[-2:])))
    out = {}
    for t in ts:
        a = spec.scheduler.alphas_cumprod[t].double()
        zt = (a.sqrt() * z0 + (1 - a).sqrt() * noise).float()
        row = {}
        for name, (sp, c) in variants.items():
            with torch.no_grad():
                eps = sp(zt, torch.full((px.shape[0],), t), c).double()
            x0 = ((zt - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)[:, :, 0]
            row[name] = round(float(region_psnr(x0, px, region).mean()), 2)
        out[str(t)] = row
    return out


def load(source: str):
    """A preset (`tiny-world-inpaint`) or an export folder of the tiny world -> (spec, card)."""
    if Path(source).is_dir() and (Path(source) / "export.json").is_file() and not (Path(source) / "model_index.json").is_file():
        return load_finetuned("tiny-world", source)
    return load_finetuned(source)


def _mean(x) -> float:
    return float(np.mean(x))


def study(models: dict[str, str], seeds=(0, 1, 2), n: int = 16, steps: int = 20, masks=MASK_KINDS,
          samples: int = 1, cross: bool = False, verbose: bool = True) -> tuple[dict, dict]:
    """`models`: {"inpaint_gp", "inpaint_white", "sr_gp", "sr_white"} -> preset or export folder (any
    subset). `cross`: also sample each GP model from white initial noise (`gp_sampled_from_white`).
    Returns (results, restorations of the first seed for the picture)."""
    loaded = {k: load(v) for k, v in models.items()}
    res: dict = {"inpainting": {k: [] for k in masks}, "super_resolution": [], "one_step_x0": {}}
    from modules.models.spec import load_model

    base = load_model("tiny-world")
    first = heldout_items(seeds[0], n)
    for name, (spec, card) in loaded.items():
        if card["task"] == "inpainting" and "rectangle" not in masks:
            continue
        m = heldout_masks(seeds[0], n, "rectangle") if card["task"] == "inpainting" else None
        res["one_step_x0"][name] = one_step_x0(spec, card, first, mask=m, seed=seeds[0], base=base)
        if verbose:
            print(f"one-step x0 PSNR, {name} (seed {seeds[0]}): {res['one_step_x0'][name]}", flush=True)
    pics: dict = {}
    for seed in seeds:
        items = heldout_items(seed, n)
        for kind in masks:
            m = heldout_masks(seed, n, kind)
            row = {"seed": seed}
            for name in ("inpaint_gp", "inpaint_white"):
                if name not in loaded:
                    continue
                spec, card = loaded[name]
                r = evaluate(spec, card, items, mask=m, steps=steps, seed=seed, samples=samples)
                row[name.split("_")[1]] = _mean(r["psnr"])
                row[f"{name.split('_')[1]}_vs_other_image"] = _mean(r["psnr_other"])
                if "psnr_mean" in r:
                    row[f"{name.split('_')[1]}_mean_of_samples"] = _mean(r["psnr_mean"])
                if cross and name.endswith("gp"):
                    row["gp_sampled_from_white"] = _mean(evaluate(spec, card, items, mask=m, steps=steps, seed=seed,
                                                                  noise="white")["psnr"])
                row[f"{name.split('_')[1]}_items"] = [round(v, 2) for v in r["psnr"]]
                row["baseline"], row["baseline_items"] = _mean(r["psnr_baseline"]), [round(v, 2) for v in r["psnr_baseline"]]
                if seed == seeds[0] and kind == "rectangle":
                    pics.setdefault("inpainting", {"target": items["pixel_values"], "input": r["input"],
                                                   "baseline": r["baseline"]})[name] = r["restored"]
            res["inpainting"][kind].append(row)
            if verbose:
                print(f"seed {seed} inpainting/{kind:9s}: " + ", ".join(
                    f"{k} {row[k]:.2f} dB" for k in ("gp", "white", "baseline", "gp_mean_of_samples", "white_mean_of_samples", "gp_sampled_from_white")
                    if k in row), flush=True)
        row = {"seed": seed}
        for name in ("sr_gp", "sr_white"):
            if name not in loaded:
                continue
            spec, card = loaded[name]
            r = evaluate(spec, card, items, steps=steps, seed=seed, samples=samples)
            row[name.split("_")[1]] = _mean(r["psnr"])
            row[f"{name.split('_')[1]}_vs_other_image"] = _mean(r["psnr_other"])
            if "psnr_mean" in r:
                row[f"{name.split('_')[1]}_mean_of_samples"] = _mean(r["psnr_mean"])
            if cross and name.endswith("gp"):
                row["gp_sampled_from_white"] = _mean(evaluate(spec, card, items, steps=steps, seed=seed, noise="white")["psnr"])
            row[f"{name.split('_')[1]}_items"] = [round(v, 2) for v in r["psnr"]]
            row["baseline"], row["baseline_items"] = _mean(r["psnr_baseline"]), [round(v, 2) for v in r["psnr_baseline"]]
            if seed == seeds[0]:
                pics.setdefault("super_resolution", {"target": items["pixel_values"], "input": r["input"],
                                                     "baseline": r["baseline"]})[name] = r["restored"]
        if len(row) > 1:
            res["super_resolution"].append(row)
            if verbose:
                print(f"seed {seed} super_resolution ×{SCALE}: " + ", ".join(
                    f"{k} {row[k]:.2f} dB" for k in ("gp", "white", "baseline", "gp_mean_of_samples", "white_mean_of_samples", "gp_sampled_from_white")
                    if k in row), flush=True)
    return res, pics


def summarise(res: dict) -> dict:
    """Per task (and mask kind): the smallest margin over the seeds of each model vs the baseline
    and of GP vs white; mean PSNRs over the seeds."""
    out = {}
    groups = {f"inpainting/{k}": v for k, v in res["inpainting"].items()}
    groups["super_resolution"] = res["super_resolution"]
    for g, rows in groups.items():
        if not rows:
            continue
        s = {"seeds": [r["seed"] for r in rows], "baseline_mean": _mean([r["baseline"] for r in rows])}
        for k in ("gp", "white"):
            if f"{k}_mean_of_samples" in rows[0]:
                s[f"{k}_mean_of_samples_mean"] = _mean([r[f"{k}_mean_of_samples"] for r in rows])
                s[f"{k}_mean_of_samples_minus_baseline_min"] = min(r[f"{k}_mean_of_samples"] - r["baseline"] for r in rows)
            if k in rows[0]:
                s[f"{k}_mean"] = _mean([r[k] for r in rows])
                if f"{k}_vs_other_image" in rows[0]:
                    s[f"{k}_minus_other_image_min"] = min(r[k] - r[f"{k}_vs_other_image"] for r in rows)
                s[f"{k}_minus_baseline_min"] = min(r[k] - r["baseline"] for r in rows)
                s[f"{k}_minus_baseline_max"] = max(r[k] - r["baseline"] for r in rows)
                s[f"{k}_beats_baseline_by_3db_every_seed"] = s[f"{k}_minus_baseline_min"] >= 3.0
        if "gp_sampled_from_white" in rows[0]:
            s["gp_sampled_from_white_mean"] = _mean([r["gp_sampled_from_white"] for r in rows])
        if "gp" in rows[0] and "white" in rows[0]:
            d = [r["gp"] - r["white"] for r in rows]
            s["gp_minus_white_per_seed"] = [round(x, 3) for x in d]
            s["gp_minus_white_min"], s["gp_minus_white_max"] = min(d), max(d)
        out[g] = s
    return out


def table(out: dict) -> str:
    """Markdown: per task/mask, mean PSNR over the seeds (each seed's value in brackets) of the baseline,
    the GP and white worlds (one sample; mean of the samples), GP sampled from white noise."""
    res = out["results"]
    groups = {f"inpainting, {k}": v for k, v in res["inpainting"].items()}
    groups[f"×{SCALE} super-resolution"] = res["super_resolution"]
    cols = [("baseline", "trivial baseline"), ("gp", "GP world"), ("white", "white twin"),
            ("gp_mean_of_samples", "GP, mean of samples"), ("white_mean_of_samples", "white, mean of samples"),
            ("gp_sampled_from_white", "GP world from white z_T"), ("gp_vs_other_image", "GP vs another crop's truth")]
    cols = [(k, lab) for k, lab in cols if any(rows and k in rows[0] for rows in groups.values())]
    lines = ["| task | " + " | ".join(lab for _, lab in cols) + " |", "|---|" + "---:|" * len(cols)]
    for g, rows in groups.items():
        if not rows:
            continue
        cells = []
        for k, _ in cols:
            if k not in rows[0]:
                cells.append("")
                continue
            vals = [r[k] for r in rows]
            cells.append(f"{_mean(vals):.1f} ({', '.join(f'{v:.1f}' for v in vals)})")
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    one = res.get("one_step_x0") or {}
    if one:
        ts = list(next(iter(one.values())))
        lines += ["", f"One-step x̂0 PSNR (dB) at t (seed {out['protocol']['seeds'][0]}; ground truth noised with the world's "
                      "training noise, one call; conditioned / conditioning zeroed / base world):", "",
                  "| world | " + " | ".join(f"t = {t}" for t in ts) + " |", "|---|" + "---:|" * len(ts)]
        for name, rows in one.items():
            lines.append(f"| {name} | " + " | ".join(
                " / ".join(f"{rows[t][k]:.1f}" for k in ("cond", "cond_zeroed", "base") if k in rows[t]) for t in ts) + " |")
    return "\n".join(lines) + "\n"


def picture(pics: dict, out_dir: Path, k: int = 6) -> list[Path]:
    """One PNG per task (`gp_world_<task>.png`): rows are held-out crops, columns input | GP | white |
    ground truth | baseline."""
    from PIL import Image, ImageDraw

    from modules.callbacks.restoration import to_uint8

    written = []
    for task, label in (("inpainting", "inpainting (rectangle masks)"), ("super_resolution", f"x{SCALE} super-resolution")):
        if task not in pics:
            continue
        p = pics[task]
        pre = "inpaint" if task == "inpainting" else "sr"
        cols = [("input", p["input"]), ("GP", p.get(f"{pre}_gp")), ("white", p.get(f"{pre}_white")),
                ("ground truth", p["target"]), ("baseline", p["baseline"])]
        cols = [(n, to_uint8(x[:k])) for n, x in cols if x is not None]
        s, pad, head = 3, 3, 14
        w = SIZE * s
        img = Image.new("RGB", (len(cols) * (w + pad), 2 * head + k * (w + pad)), "white")
        draw = ImageDraw.Draw(img)
        draw.text((2, 1), label, fill="black")
        for j, (name, arr) in enumerate(cols):
            draw.text((j * (w + pad) + 2, head + 1), name, fill="black")
            for i in range(min(k, len(arr))):
                img.paste(Image.fromarray(arr[i]).resize((w, w), Image.NEAREST), (j * (w + pad), 2 * head + i * (w + pad)))
        path = out_dir / f"gp_world_{task}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
        written.append(path)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    pk = sub.add_parser("package", help="write a run's export as a committed world folder (fp16, model card)")
    pk.add_argument("export")
    pk.add_argument("out")
    pk.add_argument("--name", default=None, help="preset name (default: the folder name)")
    pk.add_argument("--recipe", default=None)
    pk.add_argument("--extra", default="{}", help="JSON merged into the card (final_loss, training_time_s, notes)")
    ap.add_argument("--inpaint", default="tiny-world-inpaint", help="GP inpainting world (preset or export)")
    ap.add_argument("--sr", default="tiny-world-sr", help="GP super-resolution world (preset or export)")
    ap.add_argument("--white-inpaint", default="runs/gp-inpaint-world-white/export")
    ap.add_argument("--white-sr", default="runs/gp-sr-world-white/export")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--items", type=int, default=16, help="held-out crops per seed")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps")
    ap.add_argument("--samples", type=int, default=4,
                    help="restorations per item; the first is scored as the sample, their mean as the conditional-mean estimate")
    ap.add_argument("--cross", action="store_true", help="also sample the GP worlds from white initial noise")
    ap.add_argument("--only", choices=["inpainting", "super_resolution"], default=None,
                    help="evaluate one task and merge it into an existing <out>/gp_world_claims.json")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.cmd == "package":
        from modules.gp_finetune import package_world

        print(package_world(args.export, args.out, name=args.name, recipe=args.recipe, extra=json.loads(args.extra)))
        return 0
    models = {"inpaint_gp": args.inpaint, "inpaint_white": args.white_inpaint, "sr_gp": args.sr, "sr_white": args.white_sr}
    if args.only:
        models = {k: v for k, v in models.items() if k.startswith("inpaint" if args.only == "inpainting" else "sr")}
    from modules.models.spec import resolve_model_path

    for k, v in list(models.items()):
        try:
            resolve_model_path(v)
        except FileNotFoundError as e:  # a preset not trained yet, a run not exported yet
            print(f"skipping {k} ({v}): {str(e).splitlines()[0]}")
            del models[k]
    t0 = time.time()
    masks = () if args.only == "super_resolution" else MASK_KINDS
    res, pics = study(models, tuple(args.seeds), args.items, args.steps, masks=masks, samples=args.samples,
                      cross=args.cross)
    cards = {}
    for k, v in models.items():
        _, card = load(v)
        cards[k] = {f: card.get(f) for f in ("task", "noise", "training_steps", "final_loss", "training_time_s",
                                             "gp_lengthscale_at_training_size", "scale")}
        cards[k]["source"] = v
    out_dir = Path(args.out)
    previous = out_dir / "gp_world_claims.json"
    commands = ["python scripts/gp_world_results.py " + " ".join(argv if argv is not None else sys.argv[1:])]
    if args.only and previous.is_file():  # keep the other task's results (same protocol: check the seeds etc.)
        old = json.loads(previous.read_text())
        was = old["protocol"]
        if (was.get("seeds"), was.get("items_per_seed"), was.get("steps"), was.get("samples")) != (
                args.seeds, args.items, args.steps, args.samples):
            raise SystemExit(f"{previous} was measured with seeds {was.get('seeds')}, items {was.get('items_per_seed')}, "
                             f"steps {was.get('steps')}, samples {was.get('samples')}; run --only with the same "
                             "settings, or both tasks at once")
        other = "super_resolution" if args.only == "inpainting" else "inpainting"
        res[other] = old["results"][other]
        res["one_step_x0"] = {**old["results"].get("one_step_x0", {}), **res["one_step_x0"]}
        cards = {**{k: v for k, v in old["models"].items() if k not in cards}, **cards}
        commands = old.get("commands", [old.get("command")]) + commands
    out = {"protocol": {"heldout": f"the photographs resized to {HELDOUT_RESIZE} (training: 40), random {SIZE}² crops, "
                                   "seed-specific crops and masks",
                        "masks": {"rectangle": "each side 30-60% of the image", "brush": "1-4 strokes (data.restoration)",
                                  "outpaint": "kept rectangle 40-80% per side (data.restoration)"},
                        "region": "inpainting: the mask; super-resolution: the whole image",
                        "other_image": "*_vs_other_image: the same restoration scored against the next item's ground truth",
                        "baselines": "bicubic upsampling (SR); the mask filled with the mean known colour (inpainting)",
                        "sampling": f"DDIM {args.steps} steps, CFG 1, each model from the noise it was trained with; "
                                    f"{args.samples} restorations per item: the first scored as the sample (the claim), "
                                    "their mean as an estimate of the model's conditional mean (*_mean_of_samples)",
                        "one_step_x0": "results.one_step_x0: the first seed's crops (rectangle masks for inpainting) noised "
                                       "to t with the model's training noise, one network call, PSNR of the clamped x0 "
                                       "prediction over the region: with the conditioning, with it zeroed, and of the base world",
                        "seeds": args.seeds, "items_per_seed": args.items, "steps": args.steps, "samples": args.samples},
           "models": cards, "summary": summarise(res), "results": res,
           "wall_time_s": round(time.time() - t0, 1), "commands": commands}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gp_world_claims.json").write_text(json.dumps(out, indent=2) + "\n")
    md = table(out)
    (out_dir / "gp_world_claims.md").write_text(
        "PSNR (dB) of the restored region on held-out crops, mean over the seeds (per seed in brackets); "
        "`scripts/gp_world_results.py`, protocol in `gp_world_claims.json`.\n\n" + md)
    print(md)
    print(json.dumps(out["summary"], indent=2))
    print(f"wrote {out_dir / 'gp_world_claims.json'} and {', '.join(map(str, picture(pics, out_dir)))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
