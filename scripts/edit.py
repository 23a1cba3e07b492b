"""Edit any video file: inversion (DDIM or STEM) with the source prompt, reconstruction check,
sampling with the edit prompt; writes videos (at the input's frame rate), metrics JSON and a
per-frame error plot.  `--inversion fade` (a CogVideoX model) edits with FADE spectrum guidance
(empty-prompt inversion) and, for comparison, without it: both edits, the low-frequency spectral
distance to the source of each, and with `--clip DIR` CLIP text alignment / frame consistency.

    python scripts/edit.py --video data/samples/pan_astronaut.mp4 --prompt "a photo of an astronaut" \
        --edit "a photo of a cat" --model tiny-sd --inversion stem --out outputs/edit
    # with a trained adapter:  --export runs/save-tiny/export   (the base model defaults to the export's)
    # real weights:            --model models/stable-diffusion-v1-5 --height 512 --width 512

Restoration (docs/warped.md): `--task inpainting|super_resolution` restores the video with Warped
sampling instead of editing it (GP noise warped along the optical flow, equivariance self-guidance):

    python scripts/edit.py --video data/samples/pan_astronaut.mp4 --prompt "a photo of an astronaut" \
        --task inpainting --model tiny-world-inpaint --steps 50 --out outputs/warped

Bad input (steps, frame counts, a broken export folder, an unknown base model) is refused before
any model is loaded, with the flag or file and the fix.  `--num-frames 1` edits a single frame
(no warping error: it needs two frames).  `--frame-attention` with `--export` replaces the frame
attention the export was trained with (printed); without the flag the export's is used.
metrics.json is strict JSON: a value that is not finite (PSNR of a frame reconstructed exactly is
infinite) is written as null and explained in the entry's `notes`.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_MODEL = "tiny-sd"
DEFAULT_FRAME_ATTENTION = "first"
FRAME_ATTENTION = ["per_frame", "first", "sparse_causal", "full"]
PSNR_CAP_DB = 100.0  # frames reconstructed exactly count as 100 dB in the mean
REEXPORT_HINT = "re-export it with `python scripts/export.py <run>/checkpoints/last.ckpt --out <folder>`"


class UsageError(Exception):
    """Bad input found before the work starts: printed as one line `error: ...`, exit status 2."""


def at_least(low: int, what: str):
    """An argparse type: an integer >= low (argparse names the flag in its error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low} ({what}), got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low} ({what}), got {value}")
        return value

    return parse


def positive_float():
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", required=True)
    ap.add_argument("--prompt", required=True, help="source prompt (describes the input video)")
    ap.add_argument("--edit", action="append", default=[], help="edit prompt (repeatable)")
    ap.add_argument("--model", default=None,
                    help=f"diffusers folder or preset (tiny-sd, tiny-world); default: the export's base model "
                         f"with --export, else {DEFAULT_MODEL}")
    ap.add_argument("--export", default=None, help="adapter export folder to apply (e.g. runs/save-tiny/export)")
    ap.add_argument("--frame-attention", default=None, choices=FRAME_ATTENTION,
                    help=f"default: the export's with --export, else {DEFAULT_FRAME_ATTENTION}")
    ap.add_argument("--inversion", default=["ddim"], choices=["ddim", "stem", "fade"], nargs="+",
                    help="one or both (compared side by side in the plot)")
    ap.add_argument("--steps", type=at_least(1, "DDIM steps, e.g. --steps 50"), default=50,
                    help="DDIM steps, 1 .. the scheduler's num_train_timesteps (1000 for SD)")
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--num-frames", type=at_least(1, "frames to edit"), default=8)
    ap.add_argument("--stride", type=at_least(1, "take every stride-th frame"), default=1)
    ap.add_argument("--height", type=at_least(1, "pixels"), default=32)
    ap.add_argument("--width", type=at_least(1, "pixels"), default=32)
    ap.add_argument("--stem-bases", type=at_least(1, "EM bases of STEM"), default=256)
    ap.add_argument("--stem-tau", type=positive_float(), default=0.01)
    ap.add_argument("--stem-iters", type=at_least(1, "EM iterations"), default=5)
    ap.add_argument("--chunk-frames", type=at_least(1, "frames per STEM group"), default=None)
    ap.add_argument("--pnp", action="store_true", help="plug-and-play feature injection from the source trajectory")
    ap.add_argument("--fade-blocks", type=at_least(1, "FADE sketching blocks"), default=4,
                    help="FADE: the first N transformer blocks are the sketching blocks (4 of CogVideoX-5B's 42)")
    ap.add_argument("--fade-fft", default="3d", choices=["3d", "2d"],
                    help="FADE: FFT over (frames, H, W) (paper) or per frame over (H, W) (released code)")
    ap.add_argument("--fade-keep", type=positive_float(), default=2 / 3,
                    help="FADE: fraction of each frequency axis the low-pass keeps, in (0, 1]")
    ap.add_argument("--fade-scale", type=float, default=5000.0, help="FADE: s in g = s·grad G (before the norm clamp)")
    ap.add_argument("--fade-mask", default=None, help="FADE: (F, H, W) pixel mask .npy/.pt, 1 = editable (local edits)")
    ap.add_argument("--clip", default=None,
                    help="local CLIP folder (e.g. openai/clip-vit-base-patch32) for text alignment and frame "
                         "consistency of every edit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("outputs/edit"))
    # restoration with warped sampling (modules/warped.py): --task super_resolution | inpainting
    ap.add_argument("--task", default="edit", choices=["edit", "super_resolution", "inpainting"],
                    help="edit (default), or restore the video with Warped sampling (GP noise warping + "
                         "equivariance self-guidance); see docs/warped.md")
    ap.add_argument("--noise", default="gp", choices=["gp", "fixed", "resample", "nearest", "bilinear"],
                    help="restoration: noise warping mode")
    ap.add_argument("--warp-guidance", type=float, default=1.0,
                    help="restoration: λ of the equivariance self-guidance (0 = noise warping alone)")
    ap.add_argument("--frame-chunk", type=at_least(1, "frames in lockstep"), default=4)
    ap.add_argument("--flow", default="dis", choices=["dis", "farneback", "raft"],
                    help="restoration: optical flow of the conditioning frames")
    ap.add_argument("--raft-weights", default=None, help="local torchvision raft_large state dict (--flow raft)")
    ap.add_argument("--flow-file", default=None, help="a forward flow .npy (F-1, H, W, 2) instead of estimating it")
    ap.add_argument("--scale", type=at_least(2, "super-resolution factor"), default=None)
    ap.add_argument("--low-res-input", action="store_true",
                    help="super-resolution: the video is the low-res input (default: it is the ground truth, "
                         "downsampled by --scale)")
    ap.add_argument("--mask-box", default="0.25,0.25,0.5,0.5", help="inpainting: top,left,height,width fractions")
    ap.add_argument("--mask", default=None, help="inpainting: a mask image (white = regenerate) instead of --mask-box")
    return ap


def build_callbacks(inversion: str, args, scale: float | None = None) -> list:
    if inversion == "ddim":
        return []
    if inversion == "fade":
        from modules.callbacks.fade import FADEGuidance

        return [FADEGuidance(n_sketch=args.fade_blocks, fft=args.fade_fft, keep=args.fade_keep,
                             scale=args.fade_scale if scale is None else scale, mask=args.fade_mask)]
    from modules.callbacks.stem import STEMInversion

    return [STEMInversion(num_bases=args.stem_bases, tau=args.stem_tau, iters=args.stem_iters,
                          chunk_frames=args.chunk_frames, feature_injection=args.pnp)]


# ------------------------------------------------------------------------------------------------
# checks before any work
# ------------------------------------------------------------------------------------------------


def read_export_metadata(folder: str | Path) -> dict:
    """Check an export folder without loading a model: `export.json` parses and lists its files, and
    every listed safetensors file opens and reads completely.  Errors name the file and the fix."""
    folder = Path(folder)
    meta_path = folder / "export.json"
    if not folder.is_dir():
        raise UsageError(f"--export {folder}: no such folder; train a run (it exports to <run>/export) or "
                         + REEXPORT_HINT)
    if not meta_path.is_file():
        raise UsageError(f"--export {folder}: no export.json in it, so it is not an export folder; " + REEXPORT_HINT)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{meta_path}: cannot read the export metadata ({err}); " + REEXPORT_HINT) from None
    if not isinstance(meta, dict):
        raise UsageError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}; " + REEXPORT_HINT)
    missing = [k for k in ("base_model", "base_checksum", "frame_attention", "adapter", "files") if k not in meta]
    if missing:
        raise UsageError(f"{meta_path}: missing field(s) {', '.join(missing)}; " + REEXPORT_HINT)
    files = meta["files"]
    try:
        files = json.loads(files) if isinstance(files, str) else files
    except json.JSONDecodeError:
        files = None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise UsageError(f"{meta_path}: field 'files' must list the export's file names, got {meta['files']!r}; "
                         + REEXPORT_HINT)
    from safetensors import safe_open

    for name in files:
        path = folder / name
        if not path.is_file():
            raise UsageError(f"{path}: listed in {meta_path} but missing; " + REEXPORT_HINT)
        try:
            with safe_open(str(path), "pt") as f:
                for key in f.keys():
                    f.get_tensor(key)
        except Exception as err:  # safetensors raises its own SafetensorError (and OSError)
            raise UsageError(f"{path}: cannot read it ({type(err).__name__}: {err}); the file is truncated or "
                             f"corrupt; " + REEXPORT_HINT) from None
    return meta


def resolve_model(args, meta: dict | None) -> tuple[str, Path]:
    """The base model to load (`--model`, else the export's `base_model`, else the default) and its folder."""
    from modules.models.loading import ModelNotFoundError, presets, resolve_model_path

    if args.model is not None:
        name, origin = args.model, "--model"
    elif meta is not None:
        name, origin = str(meta["base_model"]), f"{Path(args.export) / 'export.json'} (base_model)"
    else:
        name, origin = DEFAULT_MODEL, "default"
    try:
        path = resolve_model_path(name)
    except ModelNotFoundError as err:
        if args.model is None and meta is not None:
            raise UsageError(
                f"the export {args.export} was trained on base model '{name}', which is neither a preset "
                f"({', '.join(presets())}) nor a model folder here; pass --model <that model's diffusers folder>"
            ) from None
        raise UsageError(f"--model {name}: {err}") from None
    if origin != "--model":
        print(f"[edit] base model: {name} (from {origin})")
    return name, path


def num_train_timesteps(model_path: Path) -> int | None:
    """The scheduler's num_train_timesteps from `<model>/scheduler/scheduler_config.json` (no model loaded)."""
    try:
        return int(json.loads((model_path / "scheduler" / "scheduler_config.json").read_text())["num_train_timesteps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_steps(steps: int, n_train: int | None, model: str) -> None:
    if n_train is not None and steps > n_train:
        raise UsageError(
            f"--steps {steps}: more than the {n_train} training timesteps of the scheduler of '{model}' "
            f"(DDIM steps are a subset of them, so the loop would not move); use 1 <= --steps <= {n_train}, "
            f"e.g. --steps 50"
        )


FALLBACK_FPS = 8.0


def output_fps(video: str | Path, stride: int) -> float:
    """Frame rate to write: the input's, divided by the stride (so the clip plays at its real speed);
    8 fps, with a notice, when the file states no usable rate."""
    from data import video_io

    fps = video_io.video_fps(video)
    if not (math.isfinite(fps) and fps > 0):
        print(f"[edit] '{video}' states no frame rate ({fps}); writing {FALLBACK_FPS:g} fps", file=sys.stderr)
        return FALLBACK_FPS
    return fps / stride


# ------------------------------------------------------------------------------------------------
# metrics.json: strict JSON
# ------------------------------------------------------------------------------------------------


def _finite(obj, where: str, notes: list[str]):
    """A JSON-safe copy: numpy scalars as Python numbers, inf/NaN as None with a note saying where."""
    if isinstance(obj, dict):
        return {k: _finite(v, f"{where}.{k}" if where else str(k), notes) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v, f"{where}[{i}]", notes) for i, v in enumerate(obj)]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):  # numpy / torch scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        reason = ("the reconstruction equals the source exactly (PSNR is infinite)"
                  if "psnr" in where and obj > 0 else "not a finite number")
        notes.append(f"{where}: {obj} written as null: {reason}")
        return None
    return obj


def write_metrics(path: Path, report: dict) -> Path:
    """Write `{inversion: entry}` as strict JSON (no Infinity/NaN): each non-finite value becomes null
    and the entry's `notes` list says which and why."""
    clean = {}
    for inv, entry in report.items():
        notes = list(entry.get("notes", []))
        body = _finite({k: v for k, v in entry.items() if k != "notes"}, "", notes)
        clean[inv] = {**body, "notes": notes}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean, indent=2, allow_nan=False))
    return path


# ------------------------------------------------------------------------------------------------


def prepare(args):
    """Everything before the edit: checks, the clip, the model.  Raises UsageError / ValueError /
    FileNotFoundError with a message for the user."""
    meta = read_export_metadata(args.export) if args.export else None
    model, model_path = resolve_model(args, meta)
    check_steps(args.steps, num_train_timesteps(model_path), model)

    from data.clip_dataset import ClipDataset

    ds = ClipDataset(args.video, prompt=args.prompt, num_frames=args.num_frames, stride=args.stride,
                     height=args.height, width=args.width)
    fps = output_fps(ds.clips[0].video, args.stride)

    from modules.models.spec import load_model

    if args.export:
        from modules.adapters.export import load_adapted_model

        spec = load_adapted_model(model, args.export)
        vunet = spec.model
        if args.frame_attention and args.frame_attention != vunet.frame_attention:
            print(f"[edit] frame attention: {args.frame_attention} (--frame-attention; the export was trained "
                  f"with {vunet.frame_attention})")
            vunet.set_frame_attention(args.frame_attention)
        else:
            print(f"[edit] frame attention: {vunet.frame_attention}")
    else:
        spec = load_model(model)
        inflate = getattr(spec, "inflate", None)  # image families; native video families (cogvideox) have none
        vunet = inflate(args.frame_attention or DEFAULT_FRAME_ATTENTION) if inflate else None
    check_steps(args.steps, spec.scheduler.config.num_train_timesteps, model)
    spec.check_video_size(args.num_frames, args.height, args.width, where="--num-frames/--height/--width")
    if "fade" in args.inversion:
        for cb in build_callbacks("fade", args):  # n_sketch vs the model's blocks, the mask file
            cb.check(spec, spec.latent_shape(args.num_frames, args.height, args.width))
    return ds, fps, model, spec, vunet


def clip_scores(scorer, video, prompt: str) -> dict:
    """CLIP text alignment (×100) and frame consistency (×100, all pairs) of an edit; {} without --clip."""
    if scorer is None:
        return {}
    from data.video_io import to_frames

    frames = to_frames(video)
    out = {"clip_text_alignment": scorer.text_alignment(frames, prompt)}
    if len(frames) > 1:
        out["frame_consistency"] = scorer.frame_consistency(frames)
    return out


def edit_with_fade(spec, pixels, args, cfg, fps, scorer):
    """FADE's edit (empty-prompt inversion, spectrum guidance) and the same edit without guidance
    (the callback with scale 0 only measures G_t): videos of both, and per edit prompt the
    low-frequency spectral distance of the edit's final latent to the source latent (sketching-block
    features at the schedule's last timestep, source prompt) and the mean G_t over the guided steps."""
    from dataclasses import replace

    from modules.callbacks.video_logger import write_edit_videos
    from modules.editing import edit_clip
    from modules.fade import spectral_distance

    cfg = replace(cfg, inversion_prompt="")
    runs = {}
    for name, scale in (("none", 0.0), ("fade", None)):
        (cb,) = build_callbacks("fade", args, scale)
        res = edit_clip(spec, pixels, args.prompt, replace(cfg, reconstruct=name == "fade"), [cb])
        runs[name] = (res, cb)  # cb.history[i]: the steps of the i-th edit prompt
    first = runs["fade"][0]
    merged = {"fade": first, "none": replace(first, edits=runs["none"][0].edits)}
    paths = write_edit_videos(args.out, merged["fade"], args.prompt, fps, tag="fade")
    unguided = write_edit_videos(args.out, merged["none"], args.prompt, fps, tag="fade_unguided")
    entry = {"fade": {"n_sketch": args.fade_blocks, "fft": args.fade_fft, "keep": args.fade_keep,
                      "scale": args.fade_scale, "mask": args.fade_mask, "inversion_prompt": ""},
             "videos": {k: str(v) for k, v in paths.items()},
             "videos_unguided": {k: str(v) for k, v in unguided.items()}, "edits": {}, "notes": []}
    inv = first.inversion
    z_src, t_last = inv.trajectory[0], inv.timesteps[0]
    for i, prompt in enumerate(cfg.edit_prompts):
        e = {}
        for name in ("none", "fade"):
            res, cb = runs[name]
            z_edit = cb.latents[i]  # the edit's final latent (before the VAE decoder)
            e[name] = {"spectral_distance": spectral_distance(spec, z_edit, z_src, inv.cond, t_last, args.fade_blocks,
                                                              args.fade_keep, args.fade_fft),
                       "mean_energy_guided_steps": cb.mean_energy(i), **clip_scores(scorer, res.edits[prompt], prompt)}
        entry["edits"][prompt] = e
        print(f"[fade] '{prompt}': low-frequency spectral distance to the source {e['fade']['spectral_distance']:.4g} "
              f"with guidance vs {e['none']['spectral_distance']:.4g} without")
    if scorer is None:
        entry["notes"].append("no --clip folder: CLIP text alignment and frame consistency not computed")
    return entry, first, paths


def restore_task(args) -> int:
    """`--task super_resolution|inpainting`: Warped sampling of the video (modules/warped.py); writes
    warped_{restored,input,side_by_side}.mp4, warped_warping_error.png, warped_metrics.json into --out."""
    from modules.callbacks.warped import WarpedSampling
    from modules.warped import restore_video_file

    try:
        box = tuple(float(v) for v in args.mask_box.split(","))
        if len(box) != 4:
            raise ValueError
    except ValueError:
        print(f"error: --mask-box must be four fractions top,left,height,width, got {args.mask_box!r}", file=sys.stderr)
        return 2
    try:
        cb = WarpedSampling(noise=args.noise, guidance=args.warp_guidance, frame_chunk=args.frame_chunk,
                            flow=args.flow, raft_weights=args.raft_weights, seed=args.seed)
        res = restore_video_file(args.video, args.task, args.out, cb, prompt=args.prompt, model=args.model,
                                 export=args.export, num_frames=args.num_frames, stride=args.stride,
                                 height=args.height, width=args.width, scale=args.scale,
                                 low_res_input=args.low_res_input, mask_box=box, mask_file=args.mask,
                                 flow_file=args.flow_file, steps=args.steps)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    we = res["metrics"]["warping_error"]
    print(f"[{args.task}] warping error vs first frame: latent {we['latent_first']:.4g}, pixel {we['pixel_first']:.4g}"
          + (f"; PSNR {res['metrics']['psnr']:.2f} dB" if "psnr" in res["metrics"] else ""))
    for k, v in res["paths"].items():
        print(f"  {k} -> {v}")
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.task != "edit":
        sys.exit(restore_task(args))

    import numpy as np
    import torch

    from data.video_io import to_frames
    from modules import metrics
    from modules.callbacks.video_logger import write_edit_videos
    from modules.editing import EditConfig, edit_clip

    torch.manual_seed(args.seed)
    try:
        ds, fps, model, spec, vunet = prepare(args)
    except (UsageError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    pixels = ds[0]["pixel_values"][None]
    if vunet is not None:
        vunet.eval()
    cfg = EditConfig(edit_prompts=args.edit, num_inference_steps=args.steps, guidance_scale=args.guidance)
    settings = {"model": model, "export": args.export,
                "frame_attention": vunet.frame_attention if vunet is not None else "native",
                "steps": args.steps, "guidance": args.guidance, "fps": fps}
    scorer = None
    if args.clip:
        scorer = metrics.ClipScorer(args.clip)
    report, errors = {}, {}
    src = to_frames(pixels)
    for inv in args.inversion:
        if inv == "fade":
            entry, res, paths = edit_with_fade(spec, pixels, args, cfg, fps, scorer)
            report[inv] = {**settings, **entry}
            # NOTE (issue-13 helper): the rest of this branch was lost from the working tree (an accidental
            # truncation of scripts/edit.py) and is reconstructed: reconstruction error for the plot, then
            # the next inversion. Check it against your version.
            rec = to_frames(res.reconstruction)
            errors[inv] = np.mean((src.astype(np.float32) - rec.astype(np.float32)) ** 2 / 255.0**2, axis=(1, 2, 3))
            print(f"[fade] side-by-side ({fps:g} fps) -> {paths['side_by_side']}")
            continue
        res = edit_clip(spec, pixels, args.prompt, cfg, build_callbacks(inv, args))
        paths = write_edit_videos(args.out, res, args.prompt, fps, tag=inv)
        rec = to_frames(res.reconstruction)
        psnr, ssim = metrics.psnr(src, rec), metrics.ssim(src, rec)
        errors[inv] = np.mean((src.astype(np.float32) - rec.astype(np.float32)) ** 2 / 255.0**2, axis=(1, 2, 3))
        notes = []
        entry = {**settings, "recon_psnr_per_frame": psnr.tolist(),
                 "recon_psnr_mean": float(np.mean(np.minimum(psnr, PSNR_CAP_DB))),
                 "recon_ssim_per_frame": ssim.tolist(),
                 "videos": {k: str(v) for k, v in paths.items()}, "edits": {}}
        if np.isinf(psnr).any():
            notes.append(f"recon_psnr_mean counts frames reconstructed exactly as {PSNR_CAP_DB:g} dB")
        for prompt, video in res.edits.items():
            if len(src) < 2:
                entry["edits"][prompt] = {"warping_error": None}
                notes.append(f"edits.{prompt}.warping_error: null: it needs at least 2 frames, the clip has 1")
                continue
            we, _ = metrics.warping_error(src, to_frames(video), flow=ds.flow(0))
            entry["edits"][prompt] = {"warping_error": we}
        entry["notes"] = notes
        report[inv] = entry
        print(f"[{inv}] reconstruction PSNR {entry['recon_psnr_mean']:.2f} dB, SSIM {ssim.mean():.4f}; "
              f"side-by-side ({fps:g} fps) -> {paths['side_by_side']}")
    write_metrics(args.out / "metrics.json", report)
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
    plt.close(fig)
    print(f"metrics -> {args.out / 'metrics.json'}, plot -> {args.out / 'reconstruction_error.png'}")


if __name__ == "__main__":
    main()
