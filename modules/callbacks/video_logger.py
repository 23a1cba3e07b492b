"""Writing and logging edit results: mp4 files in the run folder, side-by-side source|edits,
reconstruction PSNR/SSIM, and `wandb.Video` when the W&B logger is on.

The mp4s come from `data.video_io.write_video`: H.264 (libx264 through PyAV), yuv420p, crf 12
(High profile), which browsers play. The codec of what was written is checked and printed; should a
file not be H.264 yuv420p (another writer, another pix_fmt), a GIF of it is logged beside it.

Media go through the logger's own step key (`trainer/global_step`), not W&B's internal step: with
`log_every_n_steps 1` that counter is already past `trainer.global_step` and W&B drops any row
logged at an explicit smaller step."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from data.video_io import read_video, side_by_side, to_frames, write_video
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


def video_codec(path: str | Path) -> dict[str, str]:
    """Codec, pixel format and profile of a video file's first video stream."""
    import av

    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        return {"codec": ctx.name, "pix_fmt": ctx.pix_fmt or "", "profile": ctx.profile or ""}


def browser_safe(info: dict[str, str]) -> bool:
    """H.264 in 4:2:0 is what every browser plays (W&B shows videos in the browser)."""
    return info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"


def describe_codec(info: dict[str, str]) -> str:
    name = {"h264": "H.264"}.get(info["codec"], info["codec"])
    return f"{name} {info['pix_fmt']}" + (f" {info['profile']} profile" if info["profile"] else "")


def wandb_videos(paths: dict[str, Path], fps: int) -> tuple[dict, dict[str, str]]:
    """`wandb.Video`s of the mp4s under `video/<name>`; when a file is not browser-safe a GIF is
    written beside it and logged too, as `video/<name>_gif`. Returns (media, codec per name)."""
    import wandb

    media, codecs = {}, {}
    for k, p in paths.items():
        key = f"video/{slug(k)}"
        media[key] = wandb.Video(str(p), format="mp4")
        info = video_codec(p)
        codecs[k] = describe_codec(info)
        if not browser_safe(info):
            gif = write_video(Path(p).with_suffix(".gif"), read_video(p), fps)
            media[f"{key}_gif"] = wandb.Video(str(gif), format="gif")
    return media, codecs


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
    codec = describe_codec(video_codec(paths["side_by_side"]))
    if wb is not None:
        media, codecs = wandb_videos(paths, fps)
        codec = ", ".join(sorted(set(codecs.values())))
        wb.log_metrics(media, step=trainer.global_step)
    print(f"[videos] {tag}: side-by-side (source | reconstruction | edits) -> {paths['side_by_side']} ({codec})")
    return reconstruction_metrics(res)
