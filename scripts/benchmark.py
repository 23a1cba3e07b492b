"""Benchmarks: `python scripts/benchmark.py save|stem|families|gp_noise [--out DIR]` (harness code in
`scripts/bench/`; results in `benchmarks/` by default).

- `warped`: Warped sampling's noise modes on a shifted photograph (warping error, PSNR), guidance time
  and memory overhead (`scripts/bench/warped.py`); writes `<out>/warped.json`, `<out>/warped.md`, a plot.
- `save`: SAVE (spectral shifts) vs full query fine-tuning vs LoRA on the SD1.5 UNet architecture with
  random weights (`scripts/bench/save.py`); writes `<out>/save.json` and `<out>/save.md`.
- `families`: per model family, the loop's step vs the bare denoiser and peak memory
  (`scripts/bench/families.py`); writes `<out>/families.json` and `<out>/families.md`.
- `stem`: STEM inversion benchmarks (`scripts/bench/stem.py`: one attention layer per mode, EM
  breakdown; `--unet-step` adds a whole SD1.5 UNet step per mode in `--rounds` alternating rounds,
  `scripts/bench/stem_unet.py`, `--unet-modes` to choose the modes, `--no-layer` to re-run only the
  UNet step and keep the layer results already in `<out>/stem.json`); writes `<out>/stem.json`,
  `<out>/stem.md` and `<out>/stem_layer.png`.
- `fade`: a whole FADE edit vs plain CFG editing (50-step inversion + 50-step edit) on a 42-block,
  reduced-width CogVideoX at 9 and 13 latent frames, time (alternating rounds) and peak memory (a
  process per variant) (`scripts/bench/fade.py`); writes `<out>/fade.json` and `<out>/fade.md`.
- `sma`: SMA's training step vs the host's alone (VMC, MotionDirector) at 8 and 16 frames on a
  Zeroscope-depth UNet3D, step time and peak memory, with/without gradient checkpointing
  (`scripts/bench/sma.py`); writes `<out>/sma.json` and `<out>/sma.md`.
- `fade`: a whole FADE edit vs plain CFG editing (50-step inversion + 50-step edit) on a 42-block,
  reduced-width CogVideoX at 9 and 13 latent frames, time (alternating rounds) and peak memory (a
  process per variant) (`scripts/bench/fade.py`); writes `<out>/fade.json` and `<out>/fade.md`.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent  # the harness package `bench` lives here
for _p in (REPO_ROOT, SCRIPTS):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run_save(args: argparse.Namespace) -> int:
    from bench.save import BenchConfig, run_save_benchmark

    cfg = BenchConfig(model=args.model, frames=args.frames, size=args.size, batch=args.batch, warmup=args.warmup,
                      steps=args.steps, rounds=args.rounds, lora_rank=args.lora_rank, seed=args.seed,
                      isolate=not args.in_process, threads=args.threads, timeout_s=args.timeout)
    run_save_benchmark(cfg, args.out)
    return 0


def run_stem(args: argparse.Namespace) -> int:
    import json

    import torch

    from bench import stem as bench

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.no_layer and not args.unet_step:
        print("scripts/benchmark.py stem: --no-layer without --unet-step leaves nothing to run", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "stem.json"
    out: dict = {"config": {"dtype": "float32", "device": "cpu", "threads": torch.get_num_threads(),
                            "repeats": args.repeats}}
    if args.no_layer:
        # keep the layer results (and EM breakdown) of the previous run; only the UNet step is re-run
        if json_path.is_file():
            previous = json.loads(json_path.read_text())
            out = {k: v for k, v in previous.items() if k != "unet_step"}
    else:
        bench.bench_layer(out, repeats=args.repeats, verbose=True)  # fills out["layer"]
        if not args.no_breakdown:
            bench.bench_em_breakdown(out, repeats=args.repeats)
    # the whole-UNet step (SD1.5 inflated UNet, one inversion forward per self-attention mode) is opt-in
    # with --unet-step: ~30-50 s per mode and round on 2 CPU cores.
    if args.unet_step:
        from bench.stem_unet import MODES as UNET_MODES
        from bench.stem_unet import bench_unet_step

        modes = tuple(m for m in args.unet_modes.split(",") if m) if args.unet_modes else UNET_MODES
        bench_unet_step(out, rounds=args.rounds, modes=modes)  # fills out["unet_step"]
    table = bench.format_table(out)
    md = "# STEM benchmark\n\nOne self-attention layer (seconds per call):\n\n```\n" + table + "\n```\n"
    if "unet_step" in out:
        from bench.stem_unet import format_unet_step

        step = format_unet_step(out["unet_step"])
        print("\nwhole-UNet step:\n" + step)
        md += "\n## Whole SD 1.5 UNet inversion step\n\n" + step + "\n"
    print(table)
    json_path.write_text(json.dumps(out, indent=2) + "\n")
    from bench.plots import plot_stem_layers

    if out.get("layer"):
        print(f"plot -> {plot_stem_layers(out, out_dir / 'stem_layer.png')}")
    (out_dir / "stem.md").write_text(md)
    print(f"wrote {json_path} and {out_dir / 'stem.md'}")
    return 0


def run_families(args: argparse.Namespace) -> int:
    from bench.families import run

    only = [m for m in args.only.split(",") if m] or None
    run(args.out, steps=args.steps, rounds=args.rounds, device=args.device, dtype=args.dtype, only=only)
    print(f"wrote {Path(args.out) / 'families.json'} and {Path(args.out) / 'families.md'}")
    return 0


def run_sma(args: argparse.Namespace) -> int:
    from bench.sma import SMABenchConfig, run

    cfg = SMABenchConfig(frames=tuple(int(f) for f in args.frames.split(",")), size=args.size, warmup=args.warmup,
                         rounds=args.rounds, steps=args.steps, rank=args.rank, threads=args.threads, device=args.device,
                         checkpointing_frames=args.checkpointing_frames)
    run(args.out, cfg)
    print(f"wrote {Path(args.out) / 'sma.json'} and {Path(args.out) / 'sma.md'}")
    return 0


def run_gp_noise(args: argparse.Namespace) -> int:
    import torch

    from bench.gp_noise import run

    if args.threads:
        torch.set_num_threads(args.threads)
    size = dict(frames=2, channels=4, size=32, features=300) if args.quick else {}
    size.update({k: v for k, v in (("frames", args.frames), ("channels", args.channels), ("size", args.size),
                                   ("features", args.features)) if v})
    r = run(args.out, rounds=args.rounds, seed=args.seed, device=args.device, **size)
    print(f"grid {r['grid']['ratio']:.3f}× floor (target <= {r['grid']['target']}), warped {r['warped']['ratio']:.3f}× "
          f"floor (target <= {r['warped']['target']}); floor {r['floor_ms_per_frame']:.1f} ms/frame")
    print(f"wrote {Path(args.out) / 'gp_noise.json'} and {Path(args.out) / 'gp_noise.md'}")
    return 0


def run_warped(args: argparse.Namespace) -> int:
    from bench.warped import WarpedBenchConfig, run

    cfg = WarpedBenchConfig(model=args.model, photo=args.photo, frames=args.frames, shift=args.shift, steps=args.steps,
                            seeds=[int(s) for s in args.seeds.split(",")], frame_chunk=args.frame_chunk,
                            mask_motion=args.mask_motion,
                            memory_steps=args.memory_steps, threads=args.threads, features=args.features)
    r = run(cfg, args.out)
    print(f"warped/gp {r['ratios']['warped_vs_gp']:.3g}, warped/resample {r['ratios']['warped_vs_resample']:.3g}, "
          f"guidance overhead {r['guidance_overhead']['ratio']:.2f}, memory {r['memory_overhead']['ratio']:.2f}")
    print(f"wrote {Path(args.out) / 'warped.json'} and {Path(args.out) / 'warped.md'}")
    return 0


def run_fade(args: argparse.Namespace) -> int:
    from bench.fade import run

    frames = tuple(int(f) for f in args.frames.split(",") if f)
    run(args.out, frames=frames, size=args.size, heads=args.heads, steps=args.steps, rounds=args.rounds,
        threads=args.threads)
    print(f"wrote {Path(args.out) / 'fade.json'} and {Path(args.out) / 'fade.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", default="benchmarks", help="output folder (default: benchmarks)")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="benchmark", required=True)
    save = sub.add_parser("save", parents=[common], help="SAVE: spectral vs full_query vs lora")
    save.add_argument("--model", default="sd15-random",
                      help="`sd15-random` (SD1.5 UNet, random weights, built once in the cache), a preset "
                           "such as `tiny-sd`, or a local diffusers folder")
    save.add_argument("--frames", type=int, default=8)
    save.add_argument("--size", type=int, default=32, help="latent height and width")
    save.add_argument("--batch", type=int, default=1)
    save.add_argument("--warmup", type=int, default=1, help="untimed steps per variant before the rounds")
    save.add_argument("--steps", type=int, default=1, help="timed steps per variant in each round")
    save.add_argument("--rounds", type=int, default=3, help="alternating rounds over the variants")
    save.add_argument("--lora-rank", type=int, default=4)
    save.add_argument("--seed", type=int, default=0)
    save.add_argument("--in-process", action="store_true",
                      help="keep every variant in this process (peak RSS is then not per variant)")
    save.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: torch's default)")
    save.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for any one answer of a worker")
    save.set_defaults(func=run_save)
    stem = sub.add_parser("stem", parents=[common], help="STEM inversion (scripts/bench/stem.py, stem_unet.py)")
    stem.add_argument("--repeats", type=int, default=3)
    stem.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    stem.add_argument("--no-breakdown", action="store_true", help="skip the EM time breakdown")
    stem.add_argument("--unet-step", action="store_true",
                      help="also time one whole SD1.5 UNet inversion step per mode (slow on CPU)")
    stem.add_argument("--rounds", type=int, default=3,
                      help="timed alternating rounds of the whole-UNet step (after one warm-up round)")
    stem.add_argument("--unet-modes", default="",
                      help="comma-separated modes for the whole-UNet step (default: all of "
                           "per_frame,sparse_causal,all_frame,stem128,stem256,stem512)")
    stem.add_argument("--no-layer", action="store_true",
                      help="skip the per-layer benchmark and keep the layer results already in <out>/stem.json")
    stem.set_defaults(func=run_stem)
    fam = sub.add_parser("families", parents=[common],
                         help="the loop's step vs the bare denoiser, per model family (scripts/bench/families.py)")
    fam.add_argument("--steps", type=int, default=10, help="loop steps per timing")
    fam.add_argument("--rounds", type=int, default=5, help="alternating rounds (median of per-round ratios)")
    fam.add_argument("--device", default="cpu")
    fam.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    fam.add_argument("--only", default="", help="comma-separated model names (default: all)")
    fam.set_defaults(func=run_families)
    gpn = sub.add_parser("gp_noise", parents=[common],
                         help="GP noise on a grid and at warped points vs torch.cos (scripts/bench/gp_noise.py)")
    gpn.add_argument("--quick", action="store_true",
                     help="smoke size: 2 frames × 4 channels × 32², J = 300 (explicit sizes still override)")
    gpn.add_argument("--frames", type=int, default=0, help="frames (default 16)")
    gpn.add_argument("--channels", type=int, default=0, help="latent channels (default 4)")
    gpn.add_argument("--size", type=int, default=0, help="latent height and width (default 128)")
    gpn.add_argument("--features", type=int, default=0, help="J, random features per function (default 3000)")
    gpn.add_argument("--rounds", type=int, default=3, help="alternating timed rounds (after one warm-up round)")
    gpn.add_argument("--seed", type=int, default=0)
    gpn.add_argument("--device", default="cpu")
    gpn.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default / OMP_NUM_THREADS)")
    gpn.set_defaults(func=run_gp_noise)
    sma = sub.add_parser("sma", parents=[common], help="SMA vs host step time and memory (scripts/bench/sma.py)")
    sma.add_argument("--frames", default="8,16", help="comma-separated frame counts")
    sma.add_argument("--size", type=int, default=32, help="clip side in pixels (latents: half)")
    sma.add_argument("--warmup", type=int, default=2)
    sma.add_argument("--rounds", type=int, default=5)
    sma.add_argument("--steps", type=int, default=1, help="timed steps per variant in each round")
    sma.add_argument("--rank", type=int, default=32, help="MotionDirector LoRA rank")
    sma.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: torch's default)")
    sma.add_argument("--device", default="cpu", help="cpu | cuda")
    sma.add_argument("--checkpointing-frames", type=int, default=16,
                     help="frame count of the with/without gradient checkpointing pair (0: skip)")
    sma.set_defaults(func=run_sma)
    wp = sub.add_parser("warped", parents=[common],
                        help="Warped sampling: noise modes on a shifted photo, guidance cost (scripts/bench/warped.py)")
    wp.add_argument("--model", default="tiny-world-inpaint", help="a conditional inpainting model (preset or folder)")
    wp.add_argument("--photo", default="astronaut", help="a bundled photograph (data/photos.py)")
    wp.add_argument("--frames", type=int, default=16)
    wp.add_argument("--shift", type=int, default=1, help="pixels per frame")
    wp.add_argument("--steps", type=int, default=50)
    wp.add_argument("--seeds", default="0,1,2,3", help="comma-separated seeds (one round each)")
    wp.add_argument("--frame-chunk", type=int, default=4, help="frames in lockstep with guidance")
    wp.add_argument("--mask-motion", default="content", choices=["content", "screen"],
                    help="the box moves with the photograph (default, the paper's shifted masked image) or stays put")
    wp.add_argument("--memory-steps", type=int, default=3, help="steps of the peak-memory runs")
    wp.add_argument("--features", type=int, default=3000, help="J, random features of the GP noise")
    wp.add_argument("--threads", type=int, default=1, help="torch threads")
    wp.set_defaults(func=run_warped)
    fade = sub.add_parser("fade", parents=[common],
                          help="FADE vs plain CFG editing on a 42-block CogVideoX (scripts/bench/fade.py)")
    fade.add_argument("--frames", default="9,13", help="comma-separated latent frame counts (9, 13: 33, 49 video frames)")
    fade.add_argument("--size", type=int, default=32, help="clip side in pixels")
    fade.add_argument("--heads", type=int, default=4, help="attention heads of 16 dims (width = 16 × heads)")
    fade.add_argument("--steps", type=int, default=50)
    fade.add_argument("--rounds", type=int, default=3, help="alternating rounds (median of per-round ratios)")
    fade.add_argument("--threads", type=int, default=1, help="torch threads")
    fade.set_defaults(func=run_fade)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
