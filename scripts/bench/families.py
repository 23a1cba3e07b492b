"""Benchmark of the one loop on every model family: `python scripts/benchmark.py families --out DIR`.

Per family, on its tiny preset and on a real-depth, reduced-width random architecture (SD 1.5's
UNet depth, SDXL's UNet depth with 1/2/10 transformer layers, a Zeroscope-shaped UNet3D, CogVideoX
with 42 blocks): seconds per loop step (`DDIMLoop.sample`, CFG 1) vs the bare denoiser call on
the same inputs (process CPU time on CPU — wall time on a shared machine measures the other jobs —,
wall time on CUDA), alternating over rounds in one process (median of per-round ratios), and the
peak memory of a worker process per model (RSS on CPU, `max_memory_allocated` on CUDA).
Writes `DIR/families.json` (`families.<name>.{step_s, denoiser_s, overhead, rounds, peak_mem_mb}`)
and `DIR/families.md`.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# (name, preset, config changes of the denoiser for the real-depth variant, frames, size)
MODELS = [
    ("sd-tiny", "tiny-sd", None, 8, 32),
    ("sd15-depth", "tiny-sd", {
        "block_out_channels": [32, 64, 128, 128], "layers_per_block": 2, "attention_head_dim": 8,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3}, 8, 64),
    ("sdxl-tiny", "tiny-sdxl", None, 8, 32),
    ("sdxl-depth", "tiny-sdxl", {
        "block_out_channels": [32, 64, 128], "layers_per_block": 2, "attention_head_dim": [2, 4, 8],
        "transformer_layers_per_block": [1, 2, 10],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]}, 8, 64),
    ("unet3d-tiny", "tiny-unet3d", None, 8, 32),
    ("zeroscope-depth", "tiny-unet3d", {
        "block_out_channels": [32, 64, 128, 128], "layers_per_block": 2, "attention_head_dim": 8,
        "down_block_types": ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
        "up_block_types": ["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3}, 8, 64),
    ("cogvideox-tiny", "tiny-cogvideox", None, 9, 32),
    ("cogvideox-42-blocks", "tiny-cogvideox", {"num_layers": 42}, 9, 32),
]


def build_variant(preset: str, changes: dict | None, root: Path) -> str:
    """The preset itself, or a copy whose denoiser is rebuilt (random weights) with `changes`."""
    from modules.models.spec import detect_family, resolve_model_path

    src = resolve_model_path(preset)
    if not changes:
        return preset
    dst = root / f"{preset}-variant"
    shutil.copytree(src, dst)
    folder = dst / ("transformer" if detect_family(dst)[0] == "cogvideox" else "unet")
    cfg = json.loads((folder / "config.json").read_text())
    import diffusers

    cls = getattr(diffusers, cfg["_class_name"])
    cfg.update(changes)
    shutil.rmtree(folder)
    cls.from_config(cfg).save_pretrained(folder)
    return str(dst)


def peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(name: str, steps: int, rounds: int, device: str, dtype: str) -> dict:
    """Runs in its own process: time loop steps vs bare denoiser calls for one model."""
    import torch

    from modules.models.spec import load_model
    from modules.sampling import DDIMLoop

    _, preset, changes, frames, size = next(m for m in MODELS if m[0] == name)
    dev = torch.device(device)
    with tempfile.TemporaryDirectory() as tmp:
        spec = load_model(build_variant(preset, changes, Path(tmp)), dtype=getattr(torch, dtype))
        for m in spec.modules().values():
            m.to(dev)
        params = sum(p.numel() for p in spec.network.parameters())
        c, f, h, w = spec.latent_shape(frames, size, size)
        z = torch.randn(1, c, f, h, w, generator=torch.Generator().manual_seed(0)).to(dev, spec.model_dtype)
        cond = spec.encode_prompt(["a photo of a cat"], size=(size, size)).to(dev)
        loop = DDIMLoop(spec, spec.scheduler, steps, progress=False)
        ts = loop.schedule.timesteps

        def sync():
            if dev.type == "cuda":
                torch.cuda.synchronize()

        # CPU: process CPU time (other jobs on a shared machine swamp wall time); CUDA: wall time
        clock = time.perf_counter if dev.type == "cuda" else time.process_time

        def run_loop():
            sync()
            t0 = clock()
            with torch.no_grad():
                loop.sample(z, cond, guidance_scale=1.0)
            sync()
            return (clock() - t0) / steps

        def run_bare():
            sync()
            t0 = clock()
            with torch.no_grad():
                for t in ts:
                    spec(z, torch.tensor(t, device=dev), cond)
            sync()
            return (clock() - t0) / steps

        # the loop's own work per step (schedule, Prediction, DDIM arithmetic, hooks) with a free denoiser
        free = DDIMLoop(lambda x, t, c: x, spec.scheduler, steps, progress=False)

        def run_free():
            t0 = clock()
            for _ in range(20):
                free.sample(z, cond, guidance_scale=1.0)
            return (clock() - t0) / (20 * steps)

        run_loop(), run_bare(), run_free()  # warm-up
        loop_only = statistics.median(run_free() for _ in range(3))
        per_round = []
        for r in range(rounds):  # alternate which goes first
            if r % 2:
                b, s = run_bare(), run_loop()
            else:
                s, b = run_loop(), run_bare()
            per_round.append({"step_s": s, "denoiser_s": b, "overhead": s / b - 1})
    return {
        "family": spec.family, "params": params, "latent_shape": [c, f, h, w], "frames": frames, "size": size,
        "step_s": statistics.median(r["step_s"] for r in per_round),
        "denoiser_s": statistics.median(r["denoiser_s"] for r in per_round),
        "overhead": statistics.median(r["overhead"] for r in per_round),
        "loop_only_s": loop_only, "loop_only_fraction": loop_only / statistics.median(r["denoiser_s"] for r in per_round),
        "rounds": per_round, "peak_mem_mb": peak_memory_mb(dev), "device": device, "dtype": dtype,
        "clock": "wall" if dev.type == "cuda" else "process_cpu",
    }


def run(out: str | Path, steps: int = 10, rounds: int = 3, device: str = "cpu", dtype: str = "float32",
        only: list[str] | None = None) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    previous = out / "families.json"
    results = json.loads(previous.read_text())["families"] if (only and previous.is_file()) else {}
    for name, *_ in MODELS:
        if only and name not in only:
            continue
        cmd = [sys.executable, __file__, "--worker", name, str(steps), str(rounds), device, dtype]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
        if proc.returncode:
            raise RuntimeError(f"families benchmark worker for {name} failed:\n{proc.stderr[-3000:]}")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[name]
        print(f"{name:>20}: step {r['step_s'] * 1e3:8.1f} ms, denoiser {r['denoiser_s'] * 1e3:8.1f} ms, "
              f"loop alone {r['loop_only_s'] * 1e3:.3f} ms ({100 * r['loop_only_fraction']:.2f}%), "
              f"overhead {100 * r['overhead']:+.2f}% (rounds "
              f"{', '.join('%+.2f%%' % (100 * x['overhead']) for x in r['rounds'])}), peak {r['peak_mem_mb']:.0f} MB",
              flush=True)
    data = {"config": {"steps": steps, "rounds": rounds, "device": device, "dtype": dtype,
                       "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None},
            "families": results}
    (out / "families.json").write_text(json.dumps(data, indent=2))
    rows = ["| model | family | params | latents (C,F,h,w) | loop step | bare denoiser | loop alone | overhead (median; rounds) | peak memory |",
            "|---|---|---:|---|---:|---:|---:|---|---:|"]
    for name, r in results.items():
        rounds_txt = ", ".join(f"{100 * x['overhead']:+.1f}%" for x in r["rounds"])
        rows.append(f"| {name} | {r['family']} | {r['params'] / 1e6:.2f} M | {tuple(r['latent_shape'])} | "
                    f"{r['step_s'] * 1e3:.1f} ms | {r['denoiser_s'] * 1e3:.1f} ms | {r['loop_only_s'] * 1e3:.3f} ms ({100 * r['loop_only_fraction']:.2f}%) | "
                    f"{100 * r['overhead']:+.2f}% ({rounds_txt}) | {r['peak_mem_mb']:.0f} MB |")
    (out / "families.md").write_text("\n".join(rows) + "\n")
    return data


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
        name, steps, rounds, device, dtype = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
        print(json.dumps(worker(name, steps, rounds, device, dtype)))
    else:
        print("run through `python scripts/benchmark.py families --out DIR`", file=sys.stderr)
        sys.exit(2)
