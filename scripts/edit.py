"""Edit any video file: inversion (DDIM or STEM) with the source prompt, reconstruction check,
sampling with the edit prompt; writes videos, metrics JSON and a per-frame error plot.

    python scripts/edit.py --video data/samples/pan_astronaut.mp4 --prompt "a photo of an astronaut" \
        --edit "a photo of a cat" --model tiny-sd --inversion stem --out outputs/edit
    # with a trained adapter:  --export runs/save-tiny/export
    # real weights:            --model models/stable-diffusion-v1-5 --height 512 --width 512
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_callbacks(inversion: str, args) -> list:
    if inversion == "ddim":
        return []
    from modules.callbacks.stem import STEMInversion

    return [STEMInversion(num_bases=args.stem_bases, tau=args.stem_tau, iters=args.stem_iters,
                          chunk_frames=args.chunk_frames, feature_injection=args.pnp)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", required=True)
    ap.add_argument("--prompt", required=True, help="source prompt (describes the input video)")
    ap.add_argument("--edit", action="append", default=[], help="edit prompt (repeatable)")
    ap.add_argument("--model", default="tiny-sd", help="diffusers folder or preset (tiny-sd, tiny-world)")
    ap.add_argument("--export", default=None, help="adapter export folder to apply (e.g. runs/save-tiny/export)")
    ap.add_argument("--frame-attention", default="first", choices=["per_frame", "first", "sparse_causal", "full"])
    ap.add_argument("--inversion", default=["ddim"], choices=["ddim", "stem"], nargs="+",
                    help="one or both (compared side by side in the plot)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--num-frames", type=int, default=8)
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--height", type=int, default=32)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--stem-bases", type=int, default=256)
    ap.add_argument("--stem-tau", type=float, default=0.01)
    ap.add_argument("--stem-iters", type=int, default=5)
    ap.add_argument("--chunk-frames", type=int, default=None)
    ap.add_argument("--pnp", action="store_true", help="plug-and-play feature injection from the source trajectory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("outputs/edit"))
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from data.clip_dataset import ClipDataset
    from data.video_io import to_frames
    from modules import metrics
    from modules.callbacks.video_logger import write_edit_videos
    from modules.editing import EditConfig, edit_clip
    from modules.models import VideoUNet, load_parts

    torch.manual_seed(args.seed)
    ds = ClipDataset(args.video, prompt=args.prompt, num_frames=args.num_frames, stride=args.stride,
                     height=args.height, width=args.width)
    pixels = ds[0]["pixel_values"][None]
    if args.export:
        from modules.adapters.export import load_adapted_model

        parts, vunet = load_adapted_model(args.model, args.export)
    else:
        parts = load_parts(args.model)
        vunet = VideoUNet(parts.unet, args.frame_attention)
    vunet.eval()
    cfg = EditConfig(edit_prompts=args.edit, num_inference_steps=args.steps, guidance_scale=args.guidance)
    report, errors = {}, {}
    src = to_frames(pixels)
    for inv in args.inversion:
        res = edit_clip(parts, vunet, pixels, args.prompt, cfg, build_callbacks(inv, args))
        paths = write_edit_videos(args.out, res, args.prompt, 8, tag=inv)
        rec = to_frames(res.reconstruction)
        psnr, ssim = metrics.psnr(src, rec), metrics.ssim(src, rec)
        errors[inv] = np.mean((src.astype(np.float32) - rec.astype(np.float32)) ** 2 / 255.0**2, axis=(1, 2, 3))
        entry = {"recon_psnr_per_frame": psnr.tolist(), "recon_ssim_per_frame": ssim.tolist(),
                 "videos": {k: str(v) for k, v in paths.items()}, "edits": {}}
        for prompt, video in res.edits.items():
            we, _ = metrics.warping_error(src, to_frames(video), flow=ds.flow(0))
            entry["edits"][prompt] = {"warping_error": we}
        report[inv] = entry
        print(f"[{inv}] reconstruction PSNR {np.mean(np.minimum(psnr, 100)):.2f} dB, SSIM {ssim.mean():.4f}; "
              f"side-by-side -> {paths['side_by_side']}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(report, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    for inv, e in errors.items():
        ax.plot(e, marker="o", label=inv.upper())
    ax.set_xlabel("frame")
    ax.set_ylabel("reconstruction MSE")
    ax.set_title("Inversion + reconstruction error per frame")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "reconstruction_error.png", dpi=120)
    print(f"metrics -> {args.out / 'metrics.json'}, plot -> {args.out / 'reconstruction_error.png'}")


if __name__ == "__main__":
    main()
