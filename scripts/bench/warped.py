"""Warped sampling benchmark (the shape of the paper's Table 2), run by
`python scripts/benchmark.py warped --out DIR` -> DIR/warped.json, DIR/warped.md, DIR/warped_per_frame.png.

A bundled photograph shifted by an integer number of pixels per frame (content moves right, ground-truth
flow known exactly), inpainted in a fixed centre box by the GP-fine-tuned inpainting world with every
noise mode: `fixed`, `resample`, `nearest`, `bilinear` (of GP noise), `gp` (GP warping alone, λ = 0) and
`warped` (GP warping + equivariance self-guidance, λ = 1), for each seed, the modes in a rotating order.

Reported per mode: the warping error w.r.t. the first frame (latent = the final 3-channel image of this
pixel-space world, in [-1, 1]; mean over frames 1..F−1), median over seeds and per seed; per-frame curves;
PSNR of the inpainted region vs the ground truth. `guidance_overhead`: loop time per step of `warped` /
`gp` (λ = 0) in the same seed's round (the guided pass's prediction is reused for the step; exact
gradient), median over rounds with each round's figure. `memory_overhead`: peak bytes allocated during
sampling (torch profiler memory events, CPU; model weights excluded) with guidance at the default frame
chunk / without guidance (all frames in one batch, as plain sampling runs them), over `memory_steps` steps.
"""
from __future__ import annotations

import json
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from modules.sampling import SamplingCallback

MODES = ("fixed", "resample", "nearest", "bilinear", "gp", "warped")
TARGETS = {"warped_vs_gp": 0.1, "warped_vs_resample": 0.05, "guidance_overhead": 3.0, "memory_overhead": 2.0}


@dataclass
class WarpedBenchConfig:
    model: str = "tiny-world-inpaint"
    photo: str = "astronaut"
    frames: int = 16
    shift: int = 1  # pixels per frame (content moves right)
    size: int = 32
    steps: int = 50
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    frame_chunk: int = 4
    mask_box: tuple = (0.25, 0.125, 0.5, 0.375)  # top, left, height, width: 16×12 px at 32², inside all 16 frames
    mask_motion: str = "content"  # "content": the box moves with the photograph (the masked image is shifted,
    # as in the paper's Figure 1); "screen": the box stays put while the photograph moves under it
    memory_steps: int = 3
    threads: int = 1
    features: int = 3000


class _Timer(SamplingCallback):
    """Sums the loop's own time (phase start to end, guidance included) over all chunks of a video."""

    def __init__(self):
        self.seconds, self._t0 = 0.0, 0.0

    def on_phase_start(self, state):
        self._t0 = time.perf_counter()

    def on_phase_end(self, state):
        self.seconds += time.perf_counter() - self._t0


def shifted_photo(cfg: WarpedBenchConfig) -> torch.Tensor:
    """`(1, 3, F, size, size)` in [-1, 1]: frame j = frame 0 moved right by j·shift pixels."""
    from data.photos import photo

    span = cfg.shift * (cfg.frames - 1)
    big = torch.from_numpy(photo(cfg.photo, cfg.size + span)).permute(2, 0, 1).float() / 127.5 - 1
    y0 = span // 2
    return torch.stack([big[:, y0:y0 + cfg.size, span - j * cfg.shift: span - j * cfg.shift + cfg.size]
                        for j in range(cfg.frames)], 1)[None]


def shifted_mask(cfg: WarpedBenchConfig) -> torch.Tensor:
    """`(1, 1, F, size, size)`: the centre box, moved with the content (`mask_motion: content`) or fixed."""
    from modules.warped import box_mask

    if cfg.mask_motion not in ("content", "screen"):
        raise ValueError(f"mask_motion must be 'content' or 'screen', got {cfg.mask_motion!r}")
    m = box_mask(cfg.size, cfg.size, cfg.mask_box)[:, :, None].repeat(1, 1, cfg.frames, 1, 1)
    if cfg.mask_motion == "content":
        for j in range(1, cfg.frames):  # moved right by j·shift, nothing wraps around
            m[:, :, j] = 0
            m[:, :, j, :, j * cfg.shift:] = m[:, :, 0, :, :cfg.size - j * cfg.shift]
    return m


def load_spec(model: str):
    from modules.warped import load_conditional_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = load_conditional_model(model, "inpainting")
    spec.network.requires_grad_(False).eval()
    return spec


def _callback(mode: str, cfg: WarpedBenchConfig, seed: int):
    from modules.callbacks.warped import WarpedSampling

    noise = "gp" if mode == "warped" else mode
    return WarpedSampling(noise=noise, base_noise="gp", guidance=1.0 if mode == "warped" else 0.0,
                          frame_chunk=cfg.frame_chunk, seed=seed, gp={"features": cfg.features})


def run_mode(spec, mode: str, cfg: WarpedBenchConfig, seed: int, frames, mask, flow, steps: int | None = None):
    from modules.warped import warped_restore

    timer = _Timer()
    res = warped_restore(spec, "inpainting", [""], pixels=frames, mask=mask, flow=flow,
                         callback=_callback(mode, cfg, seed), num_inference_steps=steps or cfg.steps,
                         extra_callbacks=[timer])
    return res, timer.seconds / (steps or cfg.steps)  # seconds per denoising step of the whole video


def peak_bytes(fn) -> int:
    """Peak bytes allocated (CPU allocator, as the torch profiler's memory events record them) while `fn` runs,
    relative to what was allocated before."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    return int(peak)


def run(cfg: WarpedBenchConfig, out_dir) -> dict:
    from modules.flow import VideoFlow
    from modules.gp_finetune import region_psnr
    from modules.warped import plot_warping_errors, warping_errors

    torch.set_num_threads(cfg.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    spec = load_spec(cfg.model)
    frames = shifted_photo(cfg)
    flow = VideoFlow.translation(cfg.frames, cfg.size, cfg.size, dy=0.0, dx=float(cfg.shift))
    mask = shifted_mask(cfg)
    region = mask > 0.5
    from modules.gp_finetune import baseline

    base_psnr = float(region_psnr(baseline("inpainting", pixels=frames, mask=mask), frames, region).mean())
    per_seed = {m: [] for m in MODES}
    curves = {m: [] for m in MODES}
    psnr = {m: [] for m in MODES}
    step_time = {m: [] for m in MODES}
    rounds = []
    for r, seed in enumerate(cfg.seeds):
        order = list(MODES[r % len(MODES):] + MODES[:r % len(MODES)])
        if r % 2:  # the timed pair (gp, warped) in alternating order
            i, j = order.index("gp"), order.index("warped")
            order[i], order[j] = order[j], order[i]
        times = {}
        for mode in order:
            res, per_step = run_mode(spec, mode, cfg, seed, frames, mask, flow)
            errs = warping_errors(res)
            per_seed[mode].append(float(np.mean(errs["latent_first"])))
            curves[mode].append(errs)
            psnr[mode].append(float(region_psnr(res.restored, frames, region).mean()))
            step_time[mode].append(per_step)
            times[mode] = per_step
            print(f"[warped bench] seed {seed} {mode:9s} warp error (latent, first) {per_seed[mode][-1]:.3g}  "
                  f"PSNR {psnr[mode][-1]:.2f} dB  {per_step * 1e3:.0f} ms/step  ({time.perf_counter() - t_start:.0f} s)")
        rounds.append({"seed": seed, "order": list(order), "s_per_step": times,
                       "guidance_ratio": times["warped"] / times["gp"]})
    # peak memory: with guidance (default chunk) vs without (all frames in one batch), a few steps each, alternated
    mem = {"warped": [], "gp": []}
    for _ in range(2):
        for mode in ("warped", "gp"):
            mem[mode].append(peak_bytes(lambda m=mode: run_mode(spec, m, cfg, cfg.seeds[0], frames, mask, flow,
                                                                  steps=cfg.memory_steps)))
    modes = {}
    for m in MODES:
        mean_curve = {k: np.mean([c[k] for c in curves[m]], axis=0).tolist() for k in curves[m][0]}
        modes[m] = {"warp_error": float(np.median(per_seed[m])), "per_seed": per_seed[m],
                    "psnr": float(np.median(psnr[m])), "psnr_per_seed": psnr[m],
                    "per_frame": mean_curve,
                    "warp_error_variants": {k: float(np.median([np.mean(c[k]) for c in curves[m]]))
                                            for k in curves[m][0]},
                    "s_per_step": float(np.median(step_time[m]))}
    ratios = [r["guidance_ratio"] for r in rounds]
    result = {
        "config": {**asdict(cfg), "device": "cpu", "torch_threads": torch.get_num_threads(),
                   "noise_base": "gp", "cfg_scale": 1.0, "prompt": ""},
        "modes": modes,
        "guidance_overhead": {"ratio": float(statistics.median(ratios)), "per_round": ratios,
                              "rounds": rounds},
        "memory_overhead": {"ratio": max(mem["warped"]) / max(mem["gp"]), "peak_bytes_guided": mem["warped"],
                            "peak_bytes_unguided": mem["gp"], "frame_chunk": cfg.frame_chunk,
                            "steps": cfg.memory_steps},
        "baseline_psnr": base_psnr,  # the box filled with the mean colour of the known pixels
        "ratios": {"warped_vs_gp": modes["warped"]["warp_error"] / modes["gp"]["warp_error"],
                   "warped_vs_resample": modes["warped"]["warp_error"] / modes["resample"]["warp_error"]},
        "targets": TARGETS,
        "wall_s": time.perf_counter() - t_start,
    }
    result["met"] = {"warped_vs_gp": result["ratios"]["warped_vs_gp"] <= TARGETS["warped_vs_gp"],
                     "warped_vs_resample": result["ratios"]["warped_vs_resample"] <= TARGETS["warped_vs_resample"],
                     "guidance_overhead": result["guidance_overhead"]["ratio"] <= TARGETS["guidance_overhead"],
                     "memory_overhead": result["memory_overhead"]["ratio"] <= TARGETS["memory_overhead"]}
    (out_dir / "warped.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_warping_errors({m: modes[m]["per_frame"] for m in MODES}, out_dir / "warped_per_frame.png",
                        f"{cfg.photo} shifted {cfg.shift} px/frame, {len(cfg.seeds)} seeds (mean), {cfg.steps} steps")
    (out_dir / "warped.md").write_text(format_table(result))
    return result


def format_table(res: dict) -> str:
    c = res["config"]
    lines = [f"# Warped sampling benchmark\n",
             f"`{c['model']}`, photo `{c['photo']}` {c['size']}×{c['size']} shifted {c['shift']} px/frame, "
             f"{c['frames']} frames, centre box mask ({'moving with the photograph' if c['mask_motion'] == 'content' else 'fixed on the screen'}), {c['steps']} DDIM steps, seeds {c['seeds']}, "
             f"frame chunk {c['frame_chunk']}, CPU {c['torch_threads']} thread(s); {res['wall_s']:.0f} s.\n",
             "| mode | warping error vs frame 0 (median) | per seed | vs previous frame | pixel vs frame 0 | "
             "region PSNR (dB) | s/step |",
             "|---|---|---|---|---|---|---|"]
    for m, v in res["modes"].items():
        seeds = ", ".join(f"{x:.2g}" for x in v["per_seed"])
        var = v["warp_error_variants"]
        lines.append(f"| {m} | {v['warp_error']:.3g} | {seeds} | {var['latent_previous']:.3g} | {var['pixel_first']:.3g} | "
                     f"{v['psnr']:.2f} | {v['s_per_step']:.3f} |")
    lines.append(f"\nWarping error: mean over frames 1..F−1 of the MSE against frame 0 (or the previous frame) on in-frame "
                 f"points, latents (= [-1, 1] images for this pixel-space world; pixels in [0, 1]). Region PSNR: the "
                 f"inpainted box vs the photograph (median over seeds); the trivial baseline (box filled with the mean "
                 f"colour) scores {res['baseline_psnr']:.2f} dB.")
    r, g, mo = res["ratios"], res["guidance_overhead"], res["memory_overhead"]
    t, met = res["targets"], res["met"]
    yes = lambda k: "met" if met[k] else "NOT met"  # noqa: E731
    lines += ["",
              f"- warped / gp: {r['warped_vs_gp']:.3g} (target ≤ {t['warped_vs_gp']}: {yes('warped_vs_gp')})",
              f"- warped / resample: {r['warped_vs_resample']:.3g} (target ≤ {t['warped_vs_resample']}: "
              f"{yes('warped_vs_resample')})",
              f"- guidance overhead (s/step with / without, median of rounds): {g['ratio']:.2f} "
              f"(rounds {', '.join(f'{x:.2f}' for x in g['per_round'])}; target ≤ {t['guidance_overhead']}: "
              f"{yes('guidance_overhead')})",
              f"- peak memory with / without guidance: {mo['ratio']:.2f} ({max(mo['peak_bytes_guided']) / 2**20:.1f} vs "
              f"{max(mo['peak_bytes_unguided']) / 2**20:.1f} MiB allocated during sampling; target ≤ "
              f"{t['memory_overhead']}: {yes('memory_overhead')})", ""]
    return "\n".join(lines)
