"""Export callback: writes the adapted weights (safetensors + metadata + model card) at the end of
training into `<run>/export` (and optionally every N steps)."""
from __future__ import annotations

from pathlib import Path

import lightning as L


class ExportAdapter(L.Callback):
    def __init__(self, dirname: str = "export", every_n_steps: int = 0):
        """
        Args:
            dirname: folder inside the run folder (`trainer.default_root_dir`).
            every_n_steps: also export every N training steps (0: only at the end).
        """
        self.dirname = dirname
        self.every_n_steps = every_n_steps

    def _export(self, trainer, pl_module) -> None:
        if trainer.global_rank != 0:
            return
        out = pl_module.export(Path(trainer.default_root_dir) / self.dirname)
        size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
        print(f"[export] {out} ({size / 1024:.1f} KiB of safetensors)")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._export(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self._export(trainer, pl_module)
