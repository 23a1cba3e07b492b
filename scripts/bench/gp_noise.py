"""GP-noise speed: `python scripts/benchmark.py gp_noise --out DIR` (issue 12).

Noise for `frames` × `channels` latents of `size`², J random features (default 16 × 4 × 128², J = 3000):

- `grid`: the separable form (`GPNoise.grid`), one independent function per frame and channel
  (the training sampler's layout: frames × channels functions on the grid);
- `warped`: the direct form (`GPNoise.at`) of one function per channel at non-grid points — the grid
  shifted by a random sub-pixel flow per frame, as Warped evaluates back-warped coordinates;
- `floor`: `torch.cos` over the same number of (point, feature) pairs (frames · channels · size² · J),
  in chunks of 2²⁵ preallocated phases drawn from the range the real phases span (|⟨z, x⟩ + b| up to
  2/ℓ + 2π), into a preallocated output — the cosines alone, without forming a phase or summing.

Variants alternate over `rounds` in one process (the order rotates each round), after one untimed
warm-up round; on CPU the clock is the process CPU time (other jobs on a shared machine swamp wall
time; wall time is recorded too), on CUDA wall time with synchronisation. The ratios are the median
of the per-round ratios (each round's figures are kept).

Targets: grid ≤ 0.5 × floor, warped ≤ 1.5 × floor. Writes `DIR/gp_noise.json`
(`{grid: {ms_per_frame, ratio}, warped: {ms_per_frame, ratio}, floor_ms_per_frame, ...}`) and
`DIR/gp_noise.md`.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from modules.noise.gp import GPNoise, grid_points  # noqa: E402

TARGETS = {"grid": 0.5, "warped": 1.5}
FLOOR_CHUNK = 1 << 25


def _clock(device: torch.device):
    if device.type == "cuda":
        def sync():
            torch.cuda.synchronize(device)
        return time.perf_counter, sync
    return time.process_time, lambda: None


def run(out: str | Path, frames: int = 16, channels: int = 4, size: int = 128, features: int = 3000,
        rounds: int = 3, seed: int = 0, device: str = "cpu", verbose: bool = True) -> dict:
    if rounds < 1 or frames < 1 or channels < 1 or size < 1 or features < 1:
        raise ValueError("gp_noise benchmark: rounds, frames, channels, size and features must all be >= 1")
    dev = torch.device(device)
    clock, sync = _clock(dev)
    g = torch.Generator().manual_seed(seed)
    grid_noise = GPNoise.draw(frames * channels, size, g, features, device=dev)  # one function per frame·channel
    warp_noise = GPNoise.draw(channels, size, g, features, device=dev)  # one function per channel
    base = grid_points(size, size, device=dev)
    flow = (torch.rand(frames, size, size, 2, generator=g) * 2 - 1).to(dev) / size  # sub-pixel, per frame
    points = base[None] + flow  # (F, h, w, 2): off the grid
    pairs = frames * channels * size * size * features
    # the floor's phases span the range the real ones do: |⟨z, x⟩ + b| ≤ 2·(2/ℓ)·max|x| + 2π
    span = float(grid_noise.z.abs().max()) * 2 * float(points.abs().max()) + 2 * math.pi
    chunk = min(FLOOR_CHUNK, pairs)
    src = ((torch.rand(chunk, generator=g) * 2 - 1) * span).to(dev)
    dst = torch.empty_like(src)
    full, rest = divmod(pairs, chunk)

    def floor():
        for _ in range(full):
            torch.cos(src, out=dst)
        if rest:
            torch.cos(src[:rest], out=dst[:rest])

    def grid():
        return grid_noise.grid(size, size)

    def warped():
        return warp_noise.at(points)

    variants = {"floor": floor, "grid": grid, "warped": warped}
    names = list(variants)

    def timed(fn):
        sync()
        w0, c0 = time.perf_counter(), clock()
        with torch.no_grad():
            fn()
        sync()
        return clock() - c0, time.perf_counter() - w0

    with torch.no_grad():  # sanity: the values are the noise (unit variance), the forms agree on the grid
        g_out, w_out = grid(), warped()
        check = {"grid_std": float(g_out.std()), "warped_std": float(w_out.std()),
                 "grid_vs_direct_max_abs": float((warp_noise.grid(size, size) - warp_noise.at(base[None])[:, 0]).abs().max())}
        del g_out, w_out
    for name in names:  # warm-up round (allocator, kernels)
        timed(variants[name])
    per_round = []
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        row = {"order": order}
        for name in order:
            t, wall = timed(variants[name])
            row[f"{name}_ms_per_frame"] = 1e3 * t / frames
            row[f"{name}_wall_ms_per_frame"] = 1e3 * wall / frames
        row["grid_ratio"] = row["grid_ms_per_frame"] / row["floor_ms_per_frame"]
        row["warped_ratio"] = row["warped_ms_per_frame"] / row["floor_ms_per_frame"]
        per_round.append(row)
        if verbose:
            print(f"round {r + 1}/{rounds} ({', '.join(order)}): floor {row['floor_ms_per_frame']:.1f} ms/frame, "
                  f"grid {row['grid_ms_per_frame']:.2f} ms/frame ({row['grid_ratio']:.3f}×), warped "
                  f"{row['warped_ms_per_frame']:.1f} ms/frame ({row['warped_ratio']:.3f}×)", flush=True)

    def med(key):
        return statistics.median(x[key] for x in per_round)

    result = {
        "grid": {"ms_per_frame": med("grid_ms_per_frame"), "ratio": med("grid_ratio"), "target": TARGETS["grid"],
                 "met": med("grid_ratio") <= TARGETS["grid"]},
        "warped": {"ms_per_frame": med("warped_ms_per_frame"), "ratio": med("warped_ratio"),
                   "target": TARGETS["warped"], "met": med("warped_ratio") <= TARGETS["warped"]},
        "floor_ms_per_frame": med("floor_ms_per_frame"),
        "config": {"frames": frames, "channels": channels, "size": size, "features": features, "rounds": rounds,
                   "seed": seed, "device": str(dev), "threads": torch.get_num_threads(),
                   "clock": "wall" if dev.type == "cuda" else "process_cpu",
                   "point_feature_pairs": pairs, "floor_phase_span_rad": span,
                   "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                   "cpu": _cpu_name(), "torch": torch.__version__},
        "check": check,
        "rounds": per_round,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gp_noise.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "gp_noise.md").write_text(format_md(result))
    return result


def _cpu_name() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def format_md(r: dict) -> str:
    c = r["config"]
    lines = [
        "# GP noise benchmark",
        "",
        f"{c['frames']} frames × {c['channels']} channels × {c['size']}² latents, J = {c['features']} "
        f"({c['point_feature_pairs']:.3g} (point, feature) pairs), {c['device']}, {c['threads']} thread(s), "
        f"clock: {c['clock']}; {c['rounds']} alternating rounds after a warm-up; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in c['load_average'] or [])}; {c.get('cpu') or ''}.",
        "",
        "| variant | ms per frame (median) | ratio to floor (median) | target | met | ratio per round |",
        "|---|---:|---:|---:|:---:|---|",
        f"| floor (`torch.cos` over the pairs) | {r['floor_ms_per_frame']:.1f} | 1 | | | |",
    ]
    for k, label in (("grid", "grid (separable form)"), ("warped", "warped points (direct form)")):
        v = r[k]
        per = ", ".join(f"{x[f'{k}_ratio']:.3f}" for x in r["rounds"])
        lines.append(f"| {label} | {v['ms_per_frame']:.2f} | {v['ratio']:.3f} | ≤ {v['target']} | "
                     f"{'yes' if v['met'] else 'no'} | {per} |")
    lines += ["", "Per round (ms per frame, process CPU time; wall in brackets):", "",
              "| round | order | floor | grid | warped |", "|---:|---|---:|---:|---:|"]
    for i, x in enumerate(r["rounds"], 1):
        lines.append(f"| {i} | {', '.join(x['order'])} | {x['floor_ms_per_frame']:.1f} ({x['floor_wall_ms_per_frame']:.1f}) | "
                     f"{x['grid_ms_per_frame']:.2f} ({x['grid_wall_ms_per_frame']:.2f}) | "
                     f"{x['warped_ms_per_frame']:.1f} ({x['warped_wall_ms_per_frame']:.1f}) |")
    ch = r["check"]
    lines += ["", f"Sanity: std of the grid noise {ch['grid_std']:.3f}, of the warped noise {ch['warped_std']:.3f}; "
                  f"separable vs direct form on the grid: max |Δ| = {ch['grid_vs_direct_max_abs']:.2e}.", ""]
    return "\n".join(lines)
