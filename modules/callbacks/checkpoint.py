"""ModelCheckpoint that writes into `<run>/checkpoints` (the run folder is `trainer.default_root_dir`),
whatever logger is configured."""
from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint


class RunCheckpoint(ModelCheckpoint):
    def setup(self, trainer, pl_module, stage):
        if self.dirpath is None:
            self.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")
        super().setup(trainer, pl_module, stage)
