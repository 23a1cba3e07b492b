"""Writes what validation/predict return (an `EditResult`): the mp4s (source, reconstruction,
edits, side-by-side) into `<run>/videos`, reconstruction PSNR/SSIM as logged metrics, and the
videos to W&B. LightningModules return results; this callback does the files and logging. The
tuning and zero-shot modules add it themselves (`configure_callbacks`; one in a recipe is replaced)."""
from __future__ import annotations

import json
from pathlib import Path

import lightning as L

from modules.editing import EditResult


class EditVideoWriter(L.Callback):
    def _write(self, trainer, pl_module, outputs, tag: str, log_metrics: bool) -> None:
        if not isinstance(outputs, EditResult):
            return
        from modules.callbacks.video_logger import log_edit

        metrics = log_edit(pl_module, outputs, outputs.source_prompt, tag=tag)
        if metrics and log_metrics:
            pl_module.log_dict(metrics, batch_size=1)
        elif metrics and trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / "videos" / f"{tag}_metrics.json"
            path.write_text(json.dumps({k.split("/")[-1]: round(v, 4) for k, v in metrics.items()}, indent=2))
            print(f"[metrics] {tag}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()) + f" -> {path}")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._write(trainer, pl_module, outputs, f"step{trainer.global_step:06d}", log_metrics=True)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        tag = "predict" if batch_idx == 0 else f"predict{batch_idx:03d}"
        self._write(trainer, pl_module, outputs, tag, log_metrics=False)

