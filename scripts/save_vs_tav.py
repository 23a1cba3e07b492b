"""SAVE vs Tune-A-Video, speed to quality on the tiny world (SAVE's headline: ~3 vs 28 minutes).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/save_vs_tav.py --seeds 0 1   # the study (≈ 20 min CPU; 53 min wall at load ~9)
    OMP_NUM_THREADS=1 .venv/bin/python scripts/save_vs_tav.py --print-only   # tables + plot from the JSON

Writes `assets/results/save_vs_tav.json` and `assets/results/save_vs_tav.png`; numbers in README.md
and docs/world.md ("SAVE vs Tune-A-Video: speed to quality").

Protocol (fixed before measuring):
- **Seeds**: `--seeds` (the committed JSON: 0 and 1; the default 0 1 2 adds ≈ 10 min CPU).
- **Clips**: the bundled pans (`samples/pan_<source>.mp4`, 8 frames, 32×32) of `--clips`, each with
  its caption as the training prompt and its fixed edit target from `edit_pairs(0)` (astronaut →
  retina, rocket → camera).
- **Methods** (`SAVEModule(model="tiny-world", ...)`, `frame_attention="sparse_causal"` for both, as
  in Tune-A-Video and the released SAVE code, so the two models are identical at step 0;
  `temporal="full"`, lr_temporal 3e-5 (released configs), weight decay 1e-3, gradient-norm clip 1.0):
  `tav` = `adapter="full_query"` (to_q weights, lr 3e-5, Tune-A-Video's 500 steps);
  `save` = `adapter="spectral"`, δ lr 1e-3 (paper and `configs/save/tiny.yaml`), λ 1e-3, the paper's
  200 steps; `save_lr1e-2` = the same with δ lr 1e-2 (the rate `scripts/method_claims.py` tunes with).
- **Same seeds**: a run's seed seeds the module (`seed=`), i.e. the per-iteration noise and timesteps
  — every method sees the same noise and timesteps at every step of a (clip, seed).
- **Training**: Lightning's automatic optimisation reproduced step by step in one process
  (`Run.train_step`: iteration counter, `training_step`, zero_grad, backward, clip, AdamW step; a
  test checks it equals `Trainer.fit` to float tolerance), so the methods can **alternate step by
  step** (the order rotates every step) and each step's wall and thread-CPU time is measured under
  the same machine load. Evaluations are not counted in training time.
- **Evaluation** at steps `--evals` (and each method's last step): DDIM inversion of the clip at CFG 1
  with its caption, 10 steps; CFG-1 reconstruction → PSNR (mean and min over frames); edit with the
  target's caption, CFG 4 → *target rate* = fraction of frames `classify_frames` (aligned) assigns to
  the target photo. Step 0 is evaluated once per clip (both models equal the inflated world there;
  checked).
- **Speed to quality**: per (clip, seed), TAV's final quality = its reconstruction PSNR (mean over
  frames) and target rate at its last step; for each method, the first evaluated step at which the
  PSNR reaches it to within 0.1 dB (and, separately, that PSNR and a target rate ≥ TAV's), as steps, as the measured training wall
  time of that run, and as steps × the method's median step time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent.parent / "assets" / "results"
OUT = RESULTS / "save_vs_tav.json"
FRAME_ATTENTION = "sparse_causal"
EDIT_STEPS, EDIT_CFG = 10, 4.0
GRAD_CLIP = 1.0
PSNR_TOL = 0.1  # dB: "reached" = within this of the goal (a fixed margin chosen before measuring)

METHODS: dict[str, dict] = {
    "tav": {"label": "Tune-A-Video (to_q lr 3e-5)", "steps": 500,
            "kwargs": {"adapter": "full_query", "lr_query": 3e-5, "lr_temporal": 3e-5}},
    "save": {"label": "SAVE (δ lr 1e-3)", "steps": 200,
             "kwargs": {"adapter": "spectral", "lr_delta": 1e-3, "lr_temporal": 3e-5, "spectral_lambda": 1e-3}},
    "save_lr1e-2": {"label": "SAVE (δ lr 1e-2)", "steps": 200,
                    "kwargs": {"adapter": "spectral", "lr_delta": 1e-2, "lr_temporal": 3e-5, "spectral_lambda": 1e-3}},
    "save_lr1e-1": {"label": "SAVE (δ lr 1e-1)", "steps": 200,
                    "kwargs": {"adapter": "spectral", "lr_delta": 1e-1, "lr_temporal": 3e-5, "spectral_lambda": 1e-3}},
}
DEFAULT_EVALS = (10, 20, 40, 80, 120, 160, 200, 320, 500)


def clip_batch(source: str) -> dict:
    """The pan over `source` as a collated batch of one (what a DataLoader of ClipDataset yields)."""
    from data.photos import PHOTOS
    from modules.world_eval import load_pan

    return {"pixel_values": load_pan(source), "prompt": [PHOTOS[source]], "index": torch.tensor([0])}


class Run:
    """One method trained on one clip with one seed, a step at a time, as Lightning's automatic
    optimisation does it (with `Trainer(gradient_clip_val=1.0)`)."""

    def __init__(self, method: str, source: str, seed: int, max_steps: int, kwargs: dict | None = None):
        from modules.save import SAVEModule

        self.method, self.source, self.seed, self.max_steps = method, source, seed, max_steps
        kw = dict(METHODS[method]["kwargs"] if kwargs is None else kwargs)
        torch.manual_seed(seed)
        self.module = SAVEModule(model="tiny-world", frame_attention=FRAME_ATTENTION, temporal="full", seed=seed, **kw)
        self.module.train()
        self.opt = self.module.configure_optimizers()
        self.params = [p for g in self.opt.param_groups for p in g["params"]]
        self.batch = clip_batch(source)
        self.step = 0
        self.wall: list[float] = []  # per training step, seconds
        self.cpu: list[float] = []  # per training step, this thread's CPU seconds
        self.losses: list[float] = []
        self.curve: list[dict] = []

    @property
    def done(self) -> bool:
        return self.step >= self.max_steps

    def train_step(self) -> float:
        m, b = self.module, self.batch
        t0, c0 = time.perf_counter(), time.thread_time()
        m.on_train_batch_start(b, self.step)  # the module's iteration counter (keys the noise streams)
        loss = m.training_step(b, self.step)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, GRAD_CLIP)
        self.opt.step()
        self.wall.append(time.perf_counter() - t0)
        self.cpu.append(time.thread_time() - c0)
        self.step += 1
        self.losses.append(float(loss.detach()))
        return self.losses[-1]

    def trainable(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.module.named_parameters() if p.requires_grad}


@torch.no_grad()
def evaluate(module, source: str, target: str, num_steps: int = EDIT_STEPS, windows=None) -> dict:
    """Reconstruction PSNR and target rate of the module's tuned UNet on the pan over `source`."""
    from modules.metrics import psnr
    from modules.world_eval import classify_frames, edit_pan

    was = module.training
    module.eval()
    try:
        res = edit_pan(module.spec, source, [target], FRAME_ATTENTION, num_steps, EDIT_CFG, reconstruct=True,
                       video_unet=module.video_unet)
    finally:
        module.train(was)
    from data.photos import PHOTOS

    p = psnr(res.source[0], res.reconstruction[0])
    labels, _ = classify_frames(res.edits[PHOTOS[target]], windows=windows)
    return {"psnr_mean": float(np.mean(p)), "psnr_min": float(np.min(p)),
            "target_rate": sum(lab == target for lab in labels) / len(labels)}


@torch.no_grad()
def same_at_init(a, b) -> float:
    """Max |difference| of the two modules' video UNets on one random input (0 up to float error)."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 3, 8, 32, 32, generator=g)
    cond = a.spec.encode_prompt(["a photo of a rocket"], size=(32, 32))
    return float((a.spec(z, torch.tensor([500]), cond) - b.spec(z, torch.tensor([500]), cond)).abs().max())


def study(clips=("astronaut", "rocket"), seeds=(0, 1, 2), methods=("tav", "save", "save_lr1e-2"),
          steps: dict | None = None, evals=DEFAULT_EVALS, eval_steps: int = EDIT_STEPS, log=print,
          on_progress=None) -> dict:
    """Train every method on every (clip, seed), alternating step by step; `on_progress(result so far)`
    after each (clip, seed)."""
    from modules.world_eval import edit_pairs, photo_windows

    steps = {m: (steps or {}).get(m, METHODS[m]["steps"]) for m in methods}
    targets = dict(edit_pairs(0))
    wins = photo_windows()
    runs_out, step0 = [], {}
    loads = [os.getloadavg()[0]]
    t_start = time.time()
    for seed in seeds:  # seeds outer: a study cut short still has every clip for the first seeds
        for src in clips:
            tgt = targets[src]
            runs = [Run(m, src, seed, steps[m]) for m in methods]
            if src not in step0:
                diff = max(same_at_init(runs[0].module, r.module) for r in runs[1:]) if len(runs) > 1 else 0.0
                if diff > 1e-4:
                    raise AssertionError(f"methods differ at step 0 by {diff} (expected equal models)")
                t0 = time.time()
                step0[src] = {**evaluate(runs[0].module, src, tgt, eval_steps, wins), "init_max_abs_diff": diff}
                log(f"{src}->{tgt} step 0: {fmt(step0[src])} (eval {time.time() - t0:.1f}s)")
            for r in runs:
                r.curve.append({"step": 0, "train_wall_s": 0.0, "train_cpu_s": 0.0, **step0[src]})
            eval_at = {m: sorted({s for s in evals if 0 < s <= steps[m]} | {steps[m]}) for m in methods}
            k = 0
            t_eval = 0.0
            while not all(r.done for r in runs):
                order = runs[k % len(runs):] + runs[:k % len(runs)]  # rotate: no method always first
                k += 1
                for r in order:
                    if r.done:
                        continue
                    r.train_step()
                    if r.step in eval_at[r.method]:
                        t0 = time.time()
                        ev = evaluate(r.module, src, tgt, eval_steps, wins)
                        t_eval += time.time() - t0
                        loads.append(os.getloadavg()[0])
                        r.curve.append({"step": r.step, "train_wall_s": round(sum(r.wall), 3),
                                        "train_cpu_s": round(sum(r.cpu), 3), **ev})
                        log(f"{src} s{seed} {r.method:>11} step {r.step:>3}: {fmt(ev)} "
                            f"(train {sum(r.wall):.0f}s, median step {np.median(r.wall):.3f}s, load {loads[-1]:.1f})")
            for r in runs:
                runs_out.append({"method": r.method, "clip": src, "target": tgt, "seed": seed, "steps": r.max_steps,
                                 "step_wall_s": [round(x, 4) for x in r.wall],
                                 "step_cpu_s": [round(x, 4) for x in r.cpu],
                                 "loss": [round(x, 5) for x in r.losses], "curve": r.curve})
            log(f"{src} s{seed}: done ({time.time() - t_start:.0f}s so far, of which eval {t_eval:.0f}s)")
            del runs
            if on_progress is not None:
                on_progress(_result(clips, seeds, methods, steps, evals, eval_steps, targets, step0, runs_out, loads,
                                    t_start))
    return _result(clips, seeds, methods, steps, evals, eval_steps, targets, step0, runs_out, loads, t_start)


def _result(clips, seeds, methods, steps, evals, eval_steps, targets, step0, runs_out, loads, t_start) -> dict:
    done_seeds = [s for s in seeds if any(r["seed"] == s for r in runs_out)]
    res = {"protocol": {"clips": list(clips), "targets": {c: targets[c] for c in clips}, "seeds": done_seeds,
                        "seeds_planned": list(seeds),
                        "methods": {m: {**METHODS[m], "steps": steps[m]} for m in methods},
                        "frame_attention": FRAME_ATTENTION, "temporal": "full", "grad_clip": GRAD_CLIP,
                        "eval_ddim_steps": eval_steps, "psnr_tolerance_db": PSNR_TOL, "edit_cfg": EDIT_CFG,
                        "evals": sorted(set(evals)),
                        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads()},
           "step0": step0, "runs": runs_out,
           "load_avg_1min": {"min": min(loads), "median": float(np.median(loads)), "max": max(loads)},
           "cpu_count": os.cpu_count(), "wall_s": round(time.time() - t_start, 1)}
    res["summary"] = summarize(res)
    return res


# ------------------------------------------------------------------------------------------ analysis
def _first(curve: list[dict], ok) -> dict | None:
    return next((c for c in curve if ok(c)), None)


def summarize(res: dict) -> dict:
    runs = res["runs"]
    methods = list(res["protocol"]["methods"])
    per_method = {}
    for m in methods:
        rs = [r for r in runs if r["method"] == m]
        wall = np.concatenate([r["step_wall_s"] for r in rs])
        cpu = np.concatenate([r["step_cpu_s"] for r in rs])
        finals = [r["curve"][-1] for r in rs]
        per_method[m] = {"median_step_wall_s": float(np.median(wall)), "median_step_cpu_s": float(np.median(cpu)),
                         "steps": rs[0]["steps"], "n_steps_timed": int(len(wall)),
                         "final_psnr_mean": float(np.mean([f["psnr_mean"] for f in finals])),
                         "final_target_rate": float(np.mean([f["target_rate"] for f in finals]))}
    # paired step-time ratio over the steps where every method was still training (alternating window)
    if "tav" in methods:
        for m in methods:
            ratios, cpu_ratios = [], []
            for r in runs:
                if r["method"] != m:
                    continue
                t = next(x for x in runs if x["method"] == "tav" and x["clip"] == r["clip"] and x["seed"] == r["seed"])
                n = min(len(r["step_wall_s"]), len(t["step_wall_s"]))
                ratios.append(np.median(r["step_wall_s"][:n]) / np.median(t["step_wall_s"][:n]))
                cpu_ratios.append(np.median(r["step_cpu_s"][:n]) / np.median(t["step_cpu_s"][:n]))
            per_method[m]["step_time_vs_tav"] = float(np.median(ratios))
            per_method[m]["step_cpu_vs_tav"] = float(np.median(cpu_ratios))
    reach = []
    if "tav" in methods:
        for r in runs:
            t = next(x for x in runs if x["method"] == "tav" and x["clip"] == r["clip"] and x["seed"] == r["seed"])
            goal = t["curve"][-1]
            med = per_method[r["method"]]["median_step_wall_s"]
            row = {"method": r["method"], "clip": r["clip"], "seed": r["seed"],
                   "tav_final_psnr": goal["psnr_mean"], "tav_final_target_rate": goal["target_rate"],
                   "final_psnr": r["curve"][-1]["psnr_mean"], "final_target_rate": r["curve"][-1]["target_rate"]}
            for key, ok in (("psnr", lambda c: c["psnr_mean"] >= goal["psnr_mean"] - PSNR_TOL),
                            ("both", lambda c: c["psnr_mean"] >= goal["psnr_mean"] - PSNR_TOL
                             and c["target_rate"] >= goal["target_rate"])):
                c = _first(r["curve"], ok)
                row[key] = None if c is None else {
                    "step": c["step"], "train_wall_s": c["train_wall_s"], "median_time_s": round(c["step"] * med, 2),
                    "psnr_mean": c["psnr_mean"], "target_rate": c["target_rate"]}
            reach.append(row)
    return {"per_method": per_method, "reach_tav_final": reach}


def fmt(ev: dict) -> str:
    return f"recon {ev['psnr_mean']:.2f} dB (min {ev['psnr_min']:.2f}), target {ev['target_rate']:.0%}"


def print_tables(res: dict) -> None:
    s = res["summary"]
    labels = {m: v["label"] for m, v in res["protocol"]["methods"].items()}
    print(f"\nload average (1 min) during the run: {res['load_avg_1min']['min']:.1f}–{res['load_avg_1min']['max']:.1f} "
          f"(median {res['load_avg_1min']['median']:.1f}) on {res['cpu_count']} cores; wall {res['wall_s'] / 60:.1f} min")
    print("\n| method | steps | median step, wall (CPU) | step time vs TAV, wall (CPU) | final recon PSNR | "
          "final target rate |")
    print("|---|---|---|---|---|---|")
    for m, v in s["per_method"].items():
        ratio = f"{v['step_time_vs_tav']:.2f}× ({v['step_cpu_vs_tav']:.2f}×)" if "step_time_vs_tav" in v else "–"
        print(f"| {labels[m]} | {v['steps']} | {v['median_step_wall_s'] * 1e3:.0f} ms ({v['median_step_cpu_s'] * 1e3:.0f} ms) "
              f"| {ratio} | {v['final_psnr_mean']:.2f} dB | {v['final_target_rate']:.0%} |")
    print(f"\nTo reach Tune-A-Video's final quality (per clip and seed; PSNR within {PSNR_TOL} dB; step = first evaluated step; "
          "time = measured training wall time of that run [steps × median step time])")
    print("| clip | seed | TAV final (PSNR, target) | method | final (PSNR, target) | reaches TAV PSNR at | "
          "PSNR and target rate at |")
    print("|---|---|---|---|---|---|---|")

    def cell(x):
        if x is None:
            return "not reached"
        return f"step {x['step']}: {x['train_wall_s']:.0f} s [{x['median_time_s']:.0f} s]"

    for row in s["reach_tav_final"]:
        print(f"| {row['clip']} | {row['seed']} | {row['tav_final_psnr']:.2f} dB, {row['tav_final_target_rate']:.0%} "
              f"| {labels[row['method']]} | {row['final_psnr']:.2f} dB, {row['final_target_rate']:.0%} "
              f"| {cell(row['psnr'])} | {cell(row['both'])} |")
    print("\nCurves (recon PSNR mean dB / target rate) per clip, seed, method:")
    for r in res["runs"]:
        print(f"{r['clip']:>9} s{r['seed']} {r['method']:>11}: " + "  ".join(
            f"{c['step']}:{c['psnr_mean']:.2f}/{c['target_rate']:.2f}" for c in r["curve"]))


def plot(res: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = res["protocol"]["clips"]
    methods = list(res["protocol"]["methods"])
    colors = dict(zip(methods, ["tab:red", "tab:blue", "tab:green", "tab:purple"]))
    styles = ["-", "--", ":", "-."]
    seeds = res["protocol"]["seeds"]
    fig, axes = plt.subplots(2, 2 * len(clips), figsize=(4.2 * 2 * len(clips), 7), squeeze=False)
    for ci, clip in enumerate(clips):
        for xi, (xkey, xlabel) in enumerate((("step", "training steps"),
                                             ("train_wall_s", "training wall time (s, evaluations excluded)"))):
            col = 2 * ci + xi
            for yi, (ykey, ylabel) in enumerate((("psnr_mean", "reconstruction PSNR (dB)"),
                                                 ("target_rate", "edit-to-target rate"))):
                ax = axes[yi, col]
                for r in res["runs"]:
                    if r["clip"] != clip:
                        continue
                    xs = [c[xkey] for c in r["curve"]]
                    ys = [c[ykey] for c in r["curve"]]
                    si = seeds.index(r["seed"])
                    ax.plot(xs, ys, styles[si % len(styles)], marker="o", ms=3, color=colors[r["method"]],
                            label=f"{res['protocol']['methods'][r['method']]['label']}, seed {r['seed']}")
                    if r["method"] == "tav":
                        ax.axhline(ys[-1], color=colors["tav"], lw=0.6, ls=styles[si % len(styles)], alpha=0.5)
                ax.set_xlabel(xlabel)
                if ykey == "target_rate":
                    ax.set_ylim(-0.05, 1.05)
                if col == 0:
                    ax.set_ylabel(ylabel)
                ax.set_title(f"{clip} → {res['protocol']['targets'][clip]}", fontsize=9)
                ax.grid(alpha=0.3)
    h, lab = axes[0, 0].get_legend_handles_labels()
    fig.legend(h, lab, loc="lower center", ncol=min(len(lab), 3), fontsize=8)
    fig.suptitle("SAVE vs Tune-A-Video on the tiny world\n(PSNR: mean over frames; thin lines: Tune-A-Video's "
                 "final value per seed)", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", nargs="+", default=["astronaut", "rocket"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=["tav", "save", "save_lr1e-2"])
    ap.add_argument("--steps-tav", type=int, default=METHODS["tav"]["steps"])
    ap.add_argument("--steps-save", type=int, default=METHODS["save"]["steps"], help="steps of both SAVE variants")
    ap.add_argument("--evals", type=int, nargs="+", default=list(DEFAULT_EVALS),
                    help="training steps at which to evaluate (each method also at its last step)")
    ap.add_argument("--eval-ddim-steps", type=int, default=EDIT_STEPS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--print-only", action="store_true", help="recompute the summary from the runs in --out, print the tables, redraw the plot")
    args = ap.parse_args(argv)
    png = args.out.with_suffix(".png")
    if args.print_only:
        res = json.loads(args.out.read_text())
        res["summary"] = summarize(res)  # from the raw runs (the analysis may be newer than the JSON)
        args.out.write_text(json.dumps(res, indent=1) + "\n")
        print_tables(res)
        plot(res, png)
        return res
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*self.trainer. reference is not registered.*")
    steps = {m: args.steps_tav if m == "tav" else args.steps_save for m in args.methods}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def write(res):  # after every (clip, seed): a run cut short keeps what it measured
        args.out.write_text(json.dumps(res, indent=1) + "\n")

    res = study(args.clips, args.seeds, args.methods, steps, args.evals, args.eval_ddim_steps, on_progress=write)
    write(res)
    print_tables(res)
    print(f"\nwrote {args.out} and {plot(res, png)}")
    return res


if __name__ == "__main__":
    main()
