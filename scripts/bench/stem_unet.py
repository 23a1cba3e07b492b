"""STEM benchmark part 2: one whole inversion step (a UNet forward, no grad) of the real SD1.5
architecture (random weights, inflated with temporal attention) at 16 frames × 32×32 latents, for
each self-attention mode.

Modes run in alternating rounds (one warm-up round, then ``rounds`` timed rounds; the order of the
modes is reversed every other round) so the machine's load hits all of them alike.  The headline
ratio is the median over rounds of the per-round ratio ``stem256 / per_frame`` (both timed in the
same round); every round's figures are kept, as wall-clock and as process CPU time (all threads; what
the step costs the machine, much less sensitive to other jobs sharing the cores)."""
from __future__ import annotations

import os
import statistics
import time

import torch


def build_video_unet(seed: int = 0):
    from diffusers import UNet2DConditionModel

    from .save import sd15_unet_config
    from modules.models import VideoUNet

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**sd15_unet_config()).eval().requires_grad_(False)
    return VideoUNet(unet, "per_frame", temporal=True)


def set_mode(vunet, mode: str) -> None:
    from modules.callbacks.stem import STEMAttnProcessor

    if mode.startswith("stem"):
        k = int(mode[4:])
        g = torch.Generator().manual_seed(0)
        vunet.set_self_attention_processor(
            lambda name, attn: STEMAttnProcessor(vunet.ctx, k, 0.01, 5, None, g, float("inf")))
    else:
        vunet.set_frame_attention({"all_frame": "full"}.get(mode, mode))


MODES = ("per_frame", "sparse_causal", "all_frame", "stem128", "stem256", "stem512")


def round_order(modes, r: int) -> list:
    """Order of the modes in round ``r`` (0 = warm-up): reversed in every even timed round."""
    modes = list(modes)
    return modes[::-1] if r > 0 and r % 2 == 0 else modes


def ratio_summary(runs: dict, num: str, den: str) -> dict | None:
    """Per-round ratios ``runs[num][i] / runs[den][i]`` and their median (None if a mode is missing)."""
    if num not in runs or den not in runs or not runs[num]:
        return None
    per_round = [a / b for a, b in zip(runs[num], runs[den])]
    return {"num": num, "den": den, "median": statistics.median(per_round), "rounds": per_round}


def bench_unet_step(out: dict, frames: int = 16, size: int = 32, rounds: int = 3, modes=MODES, vunet=None) -> dict:
    """Fill ``out["unet_step"]``: per mode the seconds of every timed round and their median, per-round
    ratios (``_ratio_<a>_<b>``) with their median, and ``_config``. ``vunet`` defaults to the inflated
    SD 1.5 architecture with random weights (``build_video_unet``)."""
    if rounds < 1:
        raise ValueError(f"bench_unet_step: rounds must be >= 1, got {rounds}")
    unknown = [m for m in modes if m not in MODES and not (m.startswith("stem") and m[4:].isdigit())]
    if unknown:
        raise ValueError(f"bench_unet_step: unknown modes {unknown}; choose from {MODES}")
    vunet = build_video_unet() if vunet is None else vunet
    cfg = vunet.unet.config
    z = torch.randn(1, cfg.in_channels, frames, size, size, generator=torch.Generator().manual_seed(0))
    emb = torch.randn(1, 77, cfg.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    t = torch.tensor(500)
    times = {m: [] for m in modes}
    cpu = {m: [] for m in modes}  # process CPU seconds (all threads): robust to other jobs taking the cores
    load = []  # 1-minute load average at the end of every timed round (other jobs on the machine)
    with torch.no_grad():
        for r in range(rounds + 1):  # round 0 is the warm-up
            for m in round_order(modes, r):
                set_mode(vunet, m)
                t0, c0 = time.perf_counter(), time.process_time()
                vunet(z, t, emb)
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                if r > 0:
                    times[m].append(dt)
                    cpu[m].append(dc)
                print(f"  round {r} unet step {m:>13}: {dt:7.2f} s wall, {dc:7.2f} s CPU"
                      f"{' (warm-up)' if r == 0 else ''}", flush=True)
            if r > 0 and hasattr(os, "getloadavg"):
                load.append(os.getloadavg()[0])
    res = out.setdefault("unet_step", {})
    for m in modes:
        res[m] = {"seconds": statistics.median(times[m]), "runs": times[m],
                  "cpu_seconds": statistics.median(cpu[m]), "cpu_runs": cpu[m]}
    res["_config"] = {"frames": frames, "latent": [size, size], "rounds": rounds, "warmup_rounds": 1,
                      "order": "alternating (reversed every other round)", "dtype": "float32",
                      "device": "cpu", "threads": torch.get_num_threads(), "load_average_1min": load}
    for num, den in (("stem256", "per_frame"), ("stem256", "all_frame"), ("all_frame", "per_frame")):
        s = ratio_summary(times, num, den)
        if s is not None:
            res[f"_ratio_{num}_{den}"] = s
            res[f"_cpu_ratio_{num}_{den}"] = ratio_summary(cpu, num, den)
    return out


def format_unet_step(res: dict) -> str:
    """Markdown table of ``out["unet_step"]``: every round's seconds, the median, and per-round ratios."""
    modes = [m for m in res if not m.startswith("_")]
    n = max(len(res[m]["runs"]) for m in modes)
    lines = ["| mode | " + " | ".join(f"round {i + 1}" for i in range(n)) + " | median |",
             "|---|" + "---:|" * (n + 1)]
    for kind, runs_key, med_key, prefix in (("wall", "runs", "seconds", "_ratio_"),
                                            ("CPU", "cpu_runs", "cpu_seconds", "_cpu_ratio_")):
        if not all(runs_key in res[m] for m in modes):
            continue
        for m in modes:
            runs = res[m][runs_key]
            lines.append(f"| {m} ({kind}) | " + " | ".join(f"{x:.2f} s" for x in runs)
                         + f" | {res[m][med_key]:.2f} s |")
        for key, s in res.items():
            if key.startswith(prefix):
                label = f"{s['num']} / {s['den']}" if "num" in s else key[len(prefix):]
                lines.append(f"| ratio {label} ({kind}) | "
                             + " | ".join(f"{x:.3f}" for x in s["rounds"]) + f" | **{s['median']:.3f}** |")
    cfg = res.get("_config", {})
    if cfg.get("load_average_1min"):
        lines.append("| load average (1 min) | " + " | ".join(f"{x:.1f}" for x in cfg["load_average_1min"]) + " | |")
    if cfg:
        lines.append("")
        lines.append(f"{cfg.get('frames')} frames × {cfg.get('latent')} latents, {cfg.get('dtype')}, "
                     f"{cfg.get('device')}, {cfg.get('threads')} threads, 1 warm-up round + {cfg.get('rounds')} "
                     f"timed rounds, {cfg.get('order')}; ratios are per round, headline = their median; "
                     f"wall = elapsed time, CPU = the process's CPU time over all its threads (less sensitive to "
                     f"other jobs on the machine).")
    return "\n".join(lines)
