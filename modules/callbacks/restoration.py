"""Writes what GP fine-tuning's validation/predict return (a restoration dict from
`GPFinetuneModule.restore_batch`): one PNG per batch, a row per item `input | restored | ground truth |
trivial baseline`, into `<run>/images`, logged to W&B as `images/restoration`; predict also writes the
per-item PSNRs as JSON. The module adds it itself (`configure_callbacks`)."""
from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """`(B, 3, H, W)` in [-1, 1] -> uint8 `(B, H, W, 3)`."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def restoration_grid(res: dict, gap: int = 2, min_side: int = 128) -> np.ndarray:
    """Rows `input | restored | target | baseline` (images smaller than `min_side` enlarged, nearest)."""
    cols = [to_uint8(res[k]) for k in ("input", "restored", "target", "baseline")]
    b, h, w, _ = cols[0].shape
    k = max(1, -(-min_side // max(h, w)))
    cols = [c.repeat(k, axis=1).repeat(k, axis=2) for c in cols]
    h, w = h * k, w * k
    grid = np.full((b * h + (b - 1) * gap, len(cols) * w + (len(cols) - 1) * gap, 3), 255, np.uint8)
    for i in range(b):
        for j, c in enumerate(cols):
            grid[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = c[i]
    return grid


class RestorationWriter(L.Callback):
    def _write(self, trainer, outputs, tag: str) -> Path | None:
        if not (isinstance(outputs, dict) and "restored" in outputs) or trainer.global_rank != 0:
            return None
        import cv2

        from modules.callbacks.video_logger import wandb_logger

        out = Path(trainer.default_root_dir) / "images"
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{tag}_restoration.png"
        cv2.imwrite(str(path), cv2.cvtColor(restoration_grid(outputs), cv2.COLOR_RGB2BGR))
        wb = wandb_logger(trainer)
        if wb is not None:
            import wandb

            wb.log_metrics({"images/restoration": wandb.Image(str(path), caption="input | restored | target | baseline")},
                           step=trainer.global_step)
        psnr, base = outputs["psnr"].mean().item(), outputs["psnr_baseline"].mean().item()
        print(f"[images] {tag}: input | restored | target | baseline -> {path} (PSNR {psnr:.2f} dB, baseline {base:.2f} dB)")
        return path

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._write(trainer, outputs, f"step{trainer.global_step:06d}" + (f"_{batch_idx:03d}" if batch_idx else ""))

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        tag = "predict" if batch_idx == 0 else f"predict{batch_idx:03d}"
        path = self._write(trainer, outputs, tag)
        if path is not None:
            path.with_suffix(".json").write_text(json.dumps(
                {"psnr": outputs["psnr"].tolist(), "psnr_baseline": outputs["psnr_baseline"].tolist()}, indent=2))
