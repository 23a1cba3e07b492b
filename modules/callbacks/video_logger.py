"""Writing and logging edit results: mp4 files in the run folder, side-by-side source|edits,
reconstruction PSNR/SSIM, and `wandb.Video` when the W&B logger is on."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from data.video_io import side_by_side, to_frames, write_video
from modules import metrics


def run_dir(trainer) -> Path:
    return Path(trainer.default_root_dir)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:48] or "empty"


def wandb_logger(trainer):
    from lightning.pytorch.loggers import WandbLogger

    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger):
            return lg
    return None


def write_edit_videos(out: Path, res, source_prompt: str, fps: int, tag: str) -> dict[str, Path]:
    """Write source, reconstruction, edits and one side-by-side `source | recon | edits...`."""
    out.mkdir(parents=True, exist_ok=True)
    src = to_frames(res.source)
    paths = {"source": write_video(out / f"{tag}_source.mp4", src, fps)}
    row = [src]
    if res.reconstruction is not None:
        rec = to_frames(res.reconstruction)
        paths["reconstruction"] = write_video(out / f"{tag}_reconstruction.mp4", rec, fps)
        row.append(rec)
    for prompt, video in res.edits.items():
        frames = to_frames(video)
        paths[f"edit:{prompt}"] = write_video(out / f"{tag}_edit_{slug(prompt)}.mp4", frames, fps)
        row.append(frames)
    paths["side_by_side"] = write_video(out / f"{tag}_side_by_side.mp4", side_by_side(*row), fps)
    return paths


def reconstruction_metrics(res) -> dict[str, float]:
    if res.reconstruction is None:
        return {}
    src, rec = to_frames(res.source), to_frames(res.reconstruction)
    p = metrics.psnr(src, rec)
    return {"val/recon_psnr": float(np.mean(np.minimum(p, 100.0))), "val/recon_ssim": float(np.mean(metrics.ssim(src, rec)))}


def log_edit(module, res, source_prompt: str, tag: str) -> dict[str, float]:
    trainer = module.trainer
    if trainer.global_rank != 0:
        return {}
    fps = module.edit_cfg.fps
    paths = write_edit_videos(run_dir(trainer) / "videos", res, source_prompt, fps, tag)
    wb = wandb_logger(trainer)
    if wb is not None:
        import wandb

        wb.experiment.log(
            {f"video/{slug(k)}": wandb.Video(str(p), fps=fps, format="mp4") for k, p in paths.items()},
            step=trainer.global_step,
        )
    print(f"[videos] {tag}: side-by-side (source | reconstruction | edits) -> {paths['side_by_side']}")
    return reconstruction_metrics(res)
