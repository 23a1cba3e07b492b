"""The training CLI's pieces in process (fast): resume checks and optimizer settings, the run folder,
checkpoints at the last step and on SIGTERM, logger folders and W&B mode, recipes."""
import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, TensorDataset

from modules.callbacks.checkpoint import FinalStep, RunCheckpoint, SaveOnSigterm
from train.cli import (
    CLIError,
    ResumeOptimizerSettings,
    compare_with_checkpoint,
    prepare_run_folder,
    route_loggers_to_run,
)

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs").rglob("*.yaml"))


class Boring(L.LightningModule):
    def __init__(self, lr: float = 0.1, schedule: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)
        self.validated_at: list[int] = []

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.validated_at.append(self.global_step)

    def configure_optimizers(self):
        opt = torch.optim.AdamW([{"params": self.layer.parameters(), "lr": self.hparams.lr, "name": "w"}],
                                weight_decay=0.0)
        if not self.hparams.schedule:
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class LRProbe(L.Callback):
    def __init__(self):
        self.lrs = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


class SigtermAt(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def loader(n=8):
    return DataLoader(TensorDataset(torch.randn(n, 4, generator=torch.Generator().manual_seed(0))), batch_size=1)


def trainer(root, max_steps, callbacks=(), **kw):
    kw = {"limit_val_batches": 0, **kw}
    return L.Trainer(accelerator="cpu", max_steps=max_steps, max_epochs=-1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=str(root), callbacks=list(callbacks), **kw)


# -- resume ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("schedule", [False, True])
def test_new_learning_rate_takes_effect_after_the_optimizer_state_is_restored(tmp_path, schedule):
    t = trainer(tmp_path / "a", 2)
    t.fit(Boring(lr=0.1, schedule=schedule), loader())
    ckpt = tmp_path / "a.ckpt"
    t.save_checkpoint(ckpt)

    probe = LRProbe()
    trainer(tmp_path / "b", 4, callbacks=[ResumeOptimizerSettings(), probe]).fit(
        Boring(lr=0.5, schedule=schedule), loader(), ckpt_path=ckpt)
    factor = [0.5 ** 2, 0.5 ** 3] if schedule else [1.0, 1.0]  # the restored schedule continues at step 2
    assert probe.lrs == pytest.approx([0.5 * f for f in factor])

    # the same resume without the callback keeps the checkpoint's learning rate (Lightning's behaviour)
    probe = LRProbe()
    trainer(tmp_path / "c", 4, callbacks=[probe]).fit(Boring(lr=0.5, schedule=schedule), loader(), ckpt_path=ckpt)
    assert probe.lrs == pytest.approx([0.1 * f for f in factor])


def test_unchanged_resume_keeps_the_optimizer_exactly(tmp_path):
    t = trainer(tmp_path / "a", 2)
    t.fit(Boring(lr=0.1, schedule=True), loader())
    t.save_checkpoint(tmp_path / "a.ckpt")
    probe = LRProbe()
    trainer(tmp_path / "b", 3, callbacks=[ResumeOptimizerSettings(), probe]).fit(
        Boring(lr=0.1, schedule=True), loader(), ckpt_path=tmp_path / "a.ckpt")
    assert probe.lrs == [0.1 * 0.5 ** 2]


def _ckpt(**hp):
    base = {"_class_path": "modules.save.SAVEModule", "model": "tiny-world", "adapter": "spectral",
            "temporal": "full", "frame_attention": "first", "lr_delta": 1e-3, "seed": 0,
            "edit": {"num_inference_steps": 20, "edit_prompts": ["a cat"]},
            "_instantiator": "lightning.pytorch.cli.instantiate_module"}
    return {"hyper_parameters": {**base, **hp}}


def _cfg(**init):
    base = {"model": "tiny-world", "adapter": "spectral", "temporal": "full", "frame_attention": "first",
            "lr_delta": 0.001, "seed": 0, "edit": {"num_inference_steps": 20, "edit_prompts": ["a cat"]}}
    return {"class_path": "modules.save.SAVEModule", "init_args": {**base, **init}}


@pytest.mark.parametrize("field,value", [("adapter", "lora"), ("model", "tiny-sd"), ("temporal", "spectral"),
                                         ("frame_attention", "sparse_causal")])
def test_resume_refuses_a_structural_change_naming_the_field(field, value):
    with pytest.raises(CLIError, match=rf"model\.init_args\.{field}=.*cannot change on resume"):
        compare_with_checkpoint(_cfg(**{field: value}), _ckpt(), "x.ckpt")


def test_resume_refuses_another_module_class():
    cfg = _cfg()
    cfg["class_path"] = "modules.world.WorldModule"
    with pytest.raises(CLIError, match="holds a modules.save.SAVEModule"):
        compare_with_checkpoint(cfg, _ckpt(), "x.ckpt")


def test_resume_accepts_learning_rates_and_edit_settings():
    notes = compare_with_checkpoint(_cfg(lr_delta=5e-4, edit={"num_inference_steps": 4, "edit_prompts": ["a cat"]}),
                                    _ckpt(), "x.ckpt")
    assert any("lr_delta" in n and "0.0005" in n for n in notes) and any("edit" in n for n in notes)
    assert compare_with_checkpoint(_cfg(), _ckpt(), "x.ckpt") == []


# -- run folder ------------------------------------------------------------------------------------

def _old_run(root: Path) -> None:
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "last.ckpt").write_bytes(b"old")
    (root / "export").mkdir()
    (root / "export" / "export.json").write_text("{}")
    (root / "videos").mkdir()
    (root / "videos" / "old.mp4").write_bytes(b"old")
    (root / "wandb").mkdir()


def test_a_new_run_into_a_run_folder_is_refused(tmp_path):
    _old_run(tmp_path)
    with pytest.raises(CLIError, match=r"already holds a run.*--ckpt_path.*--overwrite"):
        prepare_run_folder(tmp_path, resuming=False, overwrite=False)
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_overwrite_clears_the_old_run_and_resume_keeps_it(tmp_path):
    _old_run(tmp_path)
    prepare_run_folder(tmp_path, resuming=True, overwrite=True)  # resuming: nothing is deleted
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    prepare_run_folder(tmp_path, resuming=False, overwrite=True)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "export").exists()
    assert not (tmp_path / "videos").exists() and (tmp_path / "wandb").exists()  # logs are kept
    prepare_run_folder(tmp_path, resuming=False, overwrite=False)  # now empty: accepted


def test_half_written_checkpoint_temporaries_are_removed(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    tmp = tmp_path / "checkpoints" / ".last.ckpt.k2j3h4"
    tmp.write_bytes(b"half")
    prepare_run_folder(tmp_path, resuming=True, overwrite=False)
    assert not tmp.exists()


# -- checkpoints: the last step and SIGTERM --------------------------------------------------------

def test_last_checkpoint_holds_the_last_step(tmp_path):
    ck = RunCheckpoint(save_last=True, every_n_train_steps=2, save_top_k=-1)
    trainer(tmp_path, 3, callbacks=[ck]).fit(Boring(), loader())
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


def test_the_last_step_is_validated_mid_epoch(tmp_path):
    model = Boring()
    trainer(tmp_path, 6, callbacks=[FinalStep()], limit_val_batches=1, num_sanity_val_steps=0).fit(model, loader(4), loader(1))
    assert model.validated_at == [4, 6]


def test_sigterm_saves_the_checkpoint_to_resume_from(tmp_path):
    saver = SaveOnSigterm()
    ck = RunCheckpoint(save_last=True, every_n_train_steps=100)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SIGTERMException):
            trainer(tmp_path, 6, callbacks=[ck, saver, SigtermAt(2)]).fit(Boring(), loader())
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert saver.saved == tmp_path / "checkpoints" / "last.ckpt" and saver.step == 2
    assert torch.load(saver.saved, weights_only=True)["global_step"] == 2
    # resuming writes last.ckpt again (ModelCheckpoint's version counter made last-v1.ckpt)
    trainer(tmp_path, 4, callbacks=[RunCheckpoint(save_last=True, every_n_train_steps=100)]).fit(
        Boring(), loader(), ckpt_path=saver.saved)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]
    assert torch.load(saver.saved, weights_only=True)["global_step"] == 4


# -- loggers and recipes ---------------------------------------------------------------------------

def recipe(path):
    return yaml.safe_load(Path(path).read_text())


@pytest.mark.parametrize("path", RECIPES, ids=[str(p.relative_to(ROOT / "configs")) for p in RECIPES])
def test_recipes_let_max_steps_and_wandb_mode_decide(path):
    trainer_cfg = recipe(path)["trainer"]
    assert trainer_cfg.get("max_epochs", -1) == -1  # max_steps decides how long a run is
    logger = trainer_cfg.get("logger")
    if isinstance(logger, dict):
        init = logger.get("init_args", {})
        assert not init.get("offline"), "offline: true overrides WANDB_MODE"
        assert init.get("save_dir", ".") == ".", "a fixed save_dir ignores --trainer.default_root_dir"


def test_loggers_write_into_the_run_folder_unless_told_otherwise(tmp_path):
    from jsonargparse import Namespace

    cfg = Namespace(logger=[
        Namespace(class_path="lightning.pytorch.loggers.WandbLogger", init_args=Namespace(save_dir=".", dir=None)),
        Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(save_dir=".", name="logs")),
        Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(save_dir="/elsewhere")),
    ])
    route_loggers_to_run(cfg, tmp_path)
    assert [lg.init_args.save_dir for lg in cfg.logger] == [str(tmp_path), str(tmp_path), "/elsewhere"]


def test_the_tiny_recipe_logger_follows_wandb_mode(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "disabled")
    init = recipe(ROOT / "configs/save/tiny.yaml")["trainer"]["logger"]["init_args"]
    logger = WandbLogger(**{**init, "save_dir": str(tmp_path)})
    try:
        logger.experiment.log({"x": 1})
    finally:
        import wandb

        wandb.finish()
    assert os.environ["WANDB_MODE"] == "disabled"
    assert not list(tmp_path.rglob("offline-run-*"))  # `offline: true` wrote one whatever WANDB_MODE said
