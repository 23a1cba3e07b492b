"""Checkpoints of a run: `<run>/checkpoints` (the run folder is `trainer.default_root_dir`), whatever
logger is configured; the last step is always validated and saved; SIGTERM (what schedulers such as
SLURM send before killing a job) saves `last.ckpt` before the process stops."""
from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException


class RunCheckpoint(ModelCheckpoint):
    def __init__(self, *, enable_version_counter: bool = False, **kwargs):
        """
        Args:
            enable_version_counter: write `last-v1.ckpt` beside an existing `last.ckpt` (ModelCheckpoint's
                default). Off: a run folder holds one run (the CLI refuses a new run into a used one),
                so a resumed run writes `last.ckpt` again.
            **kwargs: ModelCheckpoint's arguments (`save_last`, `every_n_train_steps`, `save_top_k`, ...).
        """
        super().__init__(enable_version_counter=enable_version_counter, **kwargs)

    def setup(self, trainer, pl_module, stage):
        if self.dirpath is None:
            self.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")
        super().setup(trainer, pl_module, stage)

    def on_train_end(self, trainer, pl_module):
        # ModelCheckpoint saves `last` at the end only if it never saved one; a run of 50 steps that
        # checkpoints every 20 would leave last.ckpt at step 40 beside an export of step 50.
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


class FinalStep(L.Callback):
    """The step that reaches `max_steps` ends training like the end of an epoch: validation (the
    edit, videos, metrics) runs there and checkpoints are written, also when `max_steps` is not a
    multiple of the epoch length."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


class SaveOnSigterm(L.Callback):
    """On SIGTERM Lightning stops after the current step by raising `SIGTERMException` (a
    `SystemExit` with code 0); this saves `last.ckpt` into the run's checkpoint folder first and
    remembers where, so the CLI can say how to resume and exit non-zero."""

    def __init__(self):
        self.saved: Path | None = None
        self.step: int | None = None
        self.max_steps: int | None = None

    @staticmethod
    def checkpoint_path(trainer) -> Path:
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath:
                return Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
        return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"

    def on_exception(self, trainer, pl_module, exception):
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        self.step, self.max_steps = trainer.global_step, trainer.max_steps
        if trainer.global_step == 0:
            return  # nothing trained yet: nothing to resume from
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        self.saved = path
