"""Export callback: writes the adapted weights at the end of training (and optionally every N steps)
in every format the module declares (`export_formats()`, registry in modules/adapters/formats.py):
the first into `<run>/export`, the others into `<run>/export-<format>`."""
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
        from modules.adapters.formats import folder_size, write_export

        run = Path(trainer.default_root_dir)
        for i, fmt in enumerate(pl_module.export_formats()):
            out = run / (self.dirname if i == 0 else f"{self.dirname}-{fmt}")
            write_export(pl_module, out, fmt, step=trainer.global_step)
            print(f"[export] {out} ({fmt}, {folder_size(out) / 1024:.1f} KiB)")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._export(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self._export(trainer, pl_module)
