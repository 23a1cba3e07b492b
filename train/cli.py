"""`python -m train fit|validate|predict -c configs/<method>/<recipe>.yaml` (LightningCLI).

Typed configs come from the class signatures; any field can be overridden on the command line
(`--model.spectral_lambda 0`); the resolved config (with the seed) is saved into the run folder;
`--ckpt_path` resumes.
"""
from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L  # noqa: E402
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback  # noqa: E402


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config as `<run>/config.yaml` (the run folder is `default_root_dir`)."""

    def setup(self, trainer, pl_module, stage):
        if self.already_saved:
            return
        from pathlib import Path

        path = Path(trainer.default_root_dir) / self.config_filename
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, path, skip_none=False, overwrite=True, multifile=False)
        self.already_saved = True


class CLI(LightningCLI):
    pass


def main(args=None):
    from modules.callbacks.checkpoint_io import AtomicCheckpointIO

    CLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=RunConfigSaver,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"plugins": [AtomicCheckpointIO()]},
        seed_everything_default=0,
        args=args,
    )


if __name__ == "__main__":
    main()
