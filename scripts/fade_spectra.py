"""Per-block spectra of a CogVideoX transformer's self-attention outputs: which blocks are "sketching"
(low-frequency: layout and motion) and which are "sharpening" for YOUR model and clip.

    python scripts/fade_spectra.py --model tiny-cogvideox --video data/samples/zoom_coffee_12f.mp4 \
        --prompt "a photo of a cup of coffee" --num-frames 9 --out outputs/fade_spectra.png

The clip is encoded, noised to `--noise` (fraction of the schedule, 0.5 = mid-way) along the DDIM
path, and the transformer run once with the prompt; for every block the `attn1` video-token output
is 3-D Fourier transformed over the token grid. Left: energy share by radial frequency (rows:
blocks). Right: the share inside FADE's centred box (`--keep`, 2/3) per block — blocks whose
share stays high are low-frequency "sketching" blocks; pick `n_sketch` where it falls.
Writes the PNG and a JSON beside it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-cogvideox")
    ap.add_argument("--video", required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--num-frames", type=int, default=9)
    ap.add_argument("--height", type=int, default=32)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--noise", type=float, default=0.5, help="noise level as a fraction of the schedule (0..1)")
    ap.add_argument("--keep", type=float, default=2 / 3)
    ap.add_argument("--bins", type=int, default=12)
    ap.add_argument("--out", type=Path, default=Path("outputs/fade_spectra.png"))
    args = ap.parse_args(argv)

    import torch

    from data.clip_dataset import ClipDataset
    from modules.fade import block_spectra, check_keep
    from modules.models.spec import load_model
    from modules.sampling import Schedule

    try:
        check_keep(args.keep, "--keep")
        if not 0 <= args.noise <= 1:
            raise ValueError(f"--noise must be in [0, 1], got {args.noise}")
        spec = load_model(args.model)
        spec.check_video_size(args.num_frames, args.height, args.width, where="--num-frames/--height/--width")
        if not hasattr(spec.network, "transformer_blocks"):
            raise ValueError(f"--model {args.model}: a '{spec.family}' model has no transformer blocks; use a CogVideoX")
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    px = ClipDataset(args.video, prompt=args.prompt, num_frames=args.num_frames, height=args.height,
                     width=args.width)[0]["pixel_values"][None]
    z0 = spec.encode(px)
    sch = Schedule.from_scheduler(spec.scheduler, 50)
    i = min(len(sch) - 1, round((1 - args.noise) * (len(sch) - 1)))
    a = sch.alpha[i]
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
    zt = a**0.5 * z0 + (1 - a) ** 0.5 * noise
    cond = spec.encode_prompt([args.prompt], size=(args.height, args.width))
    out = block_spectra(spec, spec.network, zt, sch.timesteps[i], cond, spec.token_grid(zt.shape), args.bins, args.keep)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    radial, low = out["radial"].numpy(), out["low_share"]
    n = len(low)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, max(3, 0.12 * n + 2)))
    im = ax0.imshow(radial, aspect="auto", cmap="magma", origin="upper",
                    extent=[0, float(out["edges"][-1]), n - 0.5, -0.5])
    ax0.set_xlabel("radial frequency (Nyquist of each axis = 1)")
    ax0.set_ylabel("block")
    ax0.set_title("attention-output energy share")
    fig.colorbar(im, ax=ax0)
    ax1.plot(low, range(n), marker="o")
    ax1.invert_yaxis()
    ax1.set_xlabel(f"share inside the low-pass box (keep {args.keep:.2f})")
    ax1.set_title(f"{args.model}, t = {sch.timesteps[i]}")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    plt.close(fig)
    data = {"model": args.model, "timestep": sch.timesteps[i], "keep": args.keep, "low_share": low,
            "radial": radial.tolist(), "edges": out["edges"].tolist()}
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=2))
    print(f"per-block spectra -> {args.out} (+ .json); low-frequency share per block: "
          + ", ".join(f"{v:.2f}" for v in low))
    return 0


if __name__ == "__main__":
    sys.exit(main())
