"""`python -m train fit|validate|predict -c configs/<method>/<recipe>.yaml` (LightningCLI).

Typed configs come from the class signatures; any field can be overridden on the command line
(`--model.init_args.spectral_lambda 0`); the resolved config (with the seed) is saved as
`<run>/config.yaml`, where the run folder is `trainer.default_root_dir`.

* Resume: `--ckpt_path <run>/checkpoints/last.ckpt`. The config given on the command line is the one
  that runs (and is saved): learning rates, weight decay, steps, logging and the edit settings may
  differ from the checkpoint's and take effect (also in the restored optimizer); any other model
  hyperparameter that differs (base model, adapter, temporal mode, frame attention, ...: what
  changes which tensors train or what they sit on) is refused with the field named.
* A new `fit` into a run folder that already holds checkpoints or an export is refused unless it
  resumes (`--ckpt_path`) or `--overwrite` is given (which deletes the old checkpoints/, export/,
  videos/ and plots/ first). Half-written checkpoint temporaries left by a killed save are removed.
* Loggers whose `save_dir` is unset or `.` write into the run folder. W&B is offline unless
  `WANDB_MODE` says otherwise (`WANDB_MODE=online`).
* SIGTERM (SLURM) saves `last.ckpt`, prints that the run is incomplete and how to resume, and exits
  with 143.
* Errors from bad input print one line with the cause and the fix, last; `VIDTUNE_DEBUG=1` shows
  the full traceback.
"""
from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import lightning as L  # noqa: E402
from jsonargparse import ActionYesNo  # noqa: E402
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback  # noqa: E402
from lightning.pytorch.utilities.exceptions import SIGTERMException  # noqa: E402

DEBUG_ENV = "VIDTUNE_DEBUG"
SIGTERM_EXIT = 143  # 128 + SIGTERM, what shells and schedulers report for a terminated job
RUN_OUTPUTS = ("checkpoints", "export", "videos", "plots")  # what --overwrite deletes

# Model hyperparameters that may change when resuming: optimisation (learning rates `lr`, `lr_*`,
# weight decay, loss weights, schedules), the noise seed, memory/speed switches and what
# validation does. Any other difference from the checkpoint is structural and refused.
RESUME_CHANGEABLE = {
    "lr", "weight_decay", "spectral_lambda", "warmup_steps", "total_steps", "min_lr_ratio", "time_budget_s",
    "seed", "gradient_checkpointing", "edit",
}


class CLIError(ValueError):
    """A command line that cannot run as given; the message says the fix."""


def resume_changeable(name: str) -> bool:
    return name in RESUME_CHANGEABLE or name.startswith("lr_")


def _plain(value):
    """Config values as plain JSON data, so a Namespace, a dataclass dict and a YAML list compare."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    return json.loads(json.dumps(value, default=str))


def read_checkpoint_header(path: str | Path) -> dict:
    """The checkpoint's metadata (loaded with weights_only=True: nothing in it runs)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (any failure: not a readable checkpoint)
        raise CLIError(
            f"--ckpt_path {path}: cannot be read as a checkpoint with weights_only=True "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); resume from a checkpoint this project wrote "
            "(<run>/checkpoints/last.ckpt)"
        ) from None


def compare_with_checkpoint(model_cfg: dict, ckpt: dict, ckpt_path: str) -> list[str]:
    """Check the configured model against the one the checkpoint was trained with. Raises CLIError
    naming the first structural difference; returns notices for changed settings that apply."""
    hparams = dict(ckpt.get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    theirs_class = hparams.pop("_class_path", None) or ckpt.get("module_class")
    ours_class = model_cfg.get("class_path")
    if theirs_class and ours_class and theirs_class != ours_class:
        raise CLIError(
            f"--ckpt_path {ckpt_path} holds a {theirs_class} but the config builds a {ours_class} (model.class_path); "
            "resume with the recipe the run was trained with (-c <run>/config.yaml)"
        )
    ours = _plain(model_cfg.get("init_args") or {})
    theirs = _plain(hparams)
    notices = []
    for name in sorted(set(ours) & set(theirs)):
        if ours[name] == theirs[name]:
            continue
        if resume_changeable(name):
            notices.append(f"model.init_args.{name}: {theirs[name]!r} in the checkpoint -> {ours[name]!r} (used)")
            continue
        raise CLIError(
            f"--ckpt_path {ckpt_path} was trained with model.init_args.{name}={theirs[name]!r} but this run sets "
            f"{ours[name]!r}; `{name}` changes which tensors train or the base model, so it cannot change on resume. "
            f"Resume with --model.init_args.{name} {shlex.quote(json.dumps(theirs[name]))} "
            "(or -c <run>/config.yaml), or start a new run in another --trainer.default_root_dir"
        )
    return notices


def _is_launched_rank() -> bool:
    """A process that Lightning (or torchrun/SLURM) started for a rank other than 0: the run folder
    is rank 0's to check."""
    for key in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"):
        try:
            if int(os.environ.get(key, "0") or 0) != 0:
                return True
        except ValueError:
            pass
    return False


def remove_checkpoint_temporaries(root: Path) -> list[Path]:
    """Delete `.<name>.ckpt.XXXX` files that a killed AtomicCheckpointIO save left behind."""
    removed = []
    folder = root / "checkpoints"
    if folder.is_dir():
        for p in sorted(folder.glob(".*.ckpt.*")):
            if p.is_file():
                p.unlink()
                removed.append(p)
                print(f"[checkpoint] removed {p} (a half-written checkpoint left by an interrupted save)")
    return removed


def previous_outputs(root: Path) -> list[Path]:
    """Checkpoints and exports of an earlier run in this folder."""
    found = []
    if (root / "checkpoints").is_dir():
        found += sorted((root / "checkpoints").glob("*.ckpt"))
    if (root / "export").is_dir() and any((root / "export").iterdir()):
        found.append(root / "export")
    return found


def prepare_run_folder(root: Path, resuming: bool, overwrite: bool) -> None:
    """Before a `fit`: clean up interrupted saves; refuse to mix a new run into an old one."""
    remove_checkpoint_temporaries(root)
    if resuming:
        if overwrite:
            print("[run] --overwrite is ignored when resuming (--ckpt_path): nothing is deleted")
        return
    old = previous_outputs(root)
    if not old:
        return
    if not overwrite:
        shown = ", ".join(str(p.relative_to(root)) for p in old[:4]) + (", ..." if len(old) > 4 else "")
        raise CLIError(
            f"run folder '{root}' already holds a run ({shown}); a new run there would leave stale checkpoints "
            f"beside new ones. Resume it with --ckpt_path {root / 'checkpoints' / 'last.ckpt'}, choose another "
            "--trainer.default_root_dir, or pass --overwrite to delete its "
            f"{', '.join(d + '/' for d in RUN_OUTPUTS)} first"
        )
    for name in RUN_OUTPUTS:
        if (root / name).exists():
            shutil.rmtree(root / name)
    print(f"[run] --overwrite: deleted {', '.join(d + '/' for d in RUN_OUTPUTS)} of the previous run in {root}")


def _loggers(trainer_cfg) -> list:
    lg = trainer_cfg.get("logger")
    if lg is None or isinstance(lg, bool):
        return []
    return [x for x in (lg if isinstance(lg, list) else [lg]) if hasattr(x, "get") and x.get("class_path")]


def route_loggers_to_run(trainer_cfg, root: Path) -> None:
    """A logger whose `save_dir` is unset or `.` (W&B's default) writes into the run folder."""
    for lg in _loggers(trainer_cfg):
        init = lg.get("init_args")
        if init is None or "save_dir" not in init:
            continue
        if init.get("save_dir") in (None, "", ".") and not init.get("dir"):
            init["save_dir"] = str(root)


class ResumeOptimizerSettings(L.Callback):
    """Lightning restores the optimizer (and scheduler) state from the checkpoint, learning rates
    included; this puts back the configured learning rates and weight decay (scaled by the restored
    scheduler's current factor), so that a new `lr` on resume takes effect."""

    def __init__(self):
        self._configured: list[list[dict]] = []

    def on_fit_start(self, trainer, pl_module):  # optimizers are built, the checkpoint is not restored yet
        self._configured = [[{k: g[k] for k in ("lr", "initial_lr", "weight_decay") if k in g}
                             for g in opt.param_groups] for opt in trainer.optimizers]

    def on_train_start(self, trainer, pl_module):  # after the optimizer state was restored
        if not trainer.ckpt_path or not self._configured:
            return
        changed = []
        for i, (opt, groups) in enumerate(zip(trainer.optimizers, self._configured)):
            for j, (g, want) in enumerate(zip(opt.param_groups, groups)):
                name = g.get("name", f"optimizer{i}.group{j}")
                base = want.get("initial_lr", want["lr"])
                if "initial_lr" in g:  # a scheduler is active: keep its current factor
                    factor = g["lr"] / g["initial_lr"] if g["initial_lr"] else 1.0
                    if g["initial_lr"] != base:
                        changed.append(f"{name}: lr {g['initial_lr']:g} -> {base:g}")
                    g["initial_lr"], g["lr"] = base, base * factor
                elif g["lr"] != want["lr"]:
                    changed.append(f"{name}: lr {g['lr']:g} -> {want['lr']:g}")
                    g["lr"] = want["lr"]
                if "weight_decay" in want and g.get("weight_decay") != want["weight_decay"]:
                    changed.append(f"{name}: weight_decay {g['weight_decay']:g} -> {want['weight_decay']:g}")
                    g["weight_decay"] = want["weight_decay"]
        for cfg in trainer.lr_scheduler_configs:
            sched = cfg.scheduler
            if hasattr(sched, "base_lrs"):
                sched.base_lrs = [g.get("initial_lr", g["lr"]) for g in sched.optimizer.param_groups]
        if changed and trainer.is_global_zero:
            print(f"[resume] restored optimizer set to the configured values: {'; '.join(changed)}")


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config as `<run>/config.yaml` (the run folder is `default_root_dir`)."""

    def setup(self, trainer, pl_module, stage):
        if self.already_saved:
            return
        path = Path(trainer.default_root_dir) / self.config_filename
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            config = self.config.clone()
            if "overwrite" in config:
                config.overwrite = False  # an operation on the folder, not a setting of the run
            self.parser.save(config, path, skip_none=False, overwrite=True, multifile=False)
        self.already_saved = True


class CLI(LightningCLI):
    def add_arguments_to_parser(self, parser):
        parser.add_argument(
            "--overwrite", action=ActionYesNo, default=False,
            help="fit: delete checkpoints/, export/, videos/ and plots/ of an earlier run in the run folder "
                 "(trainer.default_root_dir) first. Without it a non-empty run folder is refused unless resuming.",
        )

    def _parse_ckpt_path(self) -> None:
        # Lightning copies the checkpoint's hyperparameters over the parsed config, silently undoing
        # model flags given with --ckpt_path. Here the config stays as given, checked against them.
        sub = self.config.get("subcommand")
        if not sub:
            return
        ckpt_path = self.config[sub].get("ckpt_path")
        if not ckpt_path or ckpt_path in ("last", "best", "hpc", "registry"):
            return
        if not Path(ckpt_path).is_file():
            raise CLIError(f"--ckpt_path {ckpt_path}: no such file; a run's checkpoints are in <run>/checkpoints/")
        ckpt = read_checkpoint_header(ckpt_path)
        for line in compare_with_checkpoint(self.config[sub]["model"], ckpt, ckpt_path):
            print(f"[resume] {line}")

    def before_instantiate_classes(self) -> None:
        sub = self.config.get("subcommand")
        if not sub:
            return
        cfg = self.config[sub]
        root = Path(cfg.trainer.get("default_root_dir") or os.getcwd())
        route_loggers_to_run(cfg.trainer, root)
        if sub == "fit" and not _is_launched_rank():
            prepare_run_folder(root, resuming=bool(cfg.get("ckpt_path")), overwrite=bool(cfg.get("overwrite")))

    def instantiate_trainer(self, **kwargs):
        from lightning.pytorch.plugins.io import CheckpointIO

        from modules.callbacks.checkpoint_io import AtomicCheckpointIO

        plugins = self._get(self.config_init, "trainer", default={}).get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        return super().instantiate_trainer(plugins=plugins, **kwargs)


def _user_error_types() -> tuple[type[BaseException], ...]:
    from modules.training import NonFiniteLossError

    return (ValueError, FileNotFoundError, NonFiniteLossError)


def _root_cause(err: BaseException, types: tuple) -> BaseException:
    """The innermost exception of a handled type in the chain (jsonargparse wraps a class's own
    ValueError in 'Does not validate against any of the Union subtypes')."""
    chain, seen = [err], {id(err)}
    while True:
        nxt = chain[-1].__cause__ or chain[-1].__context__
        if nxt is None or id(nxt) in seen:
            break
        chain.append(nxt)
        seen.add(id(nxt))
    for e in reversed(chain):
        if isinstance(e, types):
            return e
    return err


def _where(err: BaseException) -> str:
    tb = traceback.extract_tb(err.__traceback__)
    if not tb:
        return ""
    f = tb[-1]
    try:
        name = str(Path(f.filename).resolve().relative_to(Path(__file__).resolve().parents[1]))
    except ValueError:
        name = f.filename
    return f"{name}:{f.lineno} ({f.name})"


def _condense_parse_error(message: str) -> str:
    """jsonargparse's message for a bad option, without the union bookkeeping around the cause."""
    noise = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value type:",
             "Given value:", "- Expected a <class 'NoneType'>")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return " ".join(line for line in lines if not line.startswith(noise))


def _sigterm_notice(saver) -> None:
    argv = [a for a in sys.argv[1:] if a != "--overwrite"]
    step = f" at step {saver.step}" + (f" of {saver.max_steps}" if saver.max_steps and saver.max_steps > 0 else "")
    lines = [f"[interrupted] SIGTERM{step}: the run is INCOMPLETE (no export was written, no final validation)."]
    if saver.saved is not None:
        root = saver.saved.parent.parent
        config = root / "config.yaml"
        cmd = (f"python -m train fit -c {config}" if config.is_file() else "python -m train " + shlex.join(argv))
        lines.append(f"  checkpoint: {saver.saved}")
        lines.append(f"  resume with: {cmd} --ckpt_path {saver.saved}")
    else:
        lines.append("  nothing was trained yet, so no checkpoint was saved: run the same command again.")
    print("\n".join(lines), file=sys.stderr, flush=True)


def main(args=None):
    from modules.callbacks.checkpoint import FinalStep, SaveOnSigterm

    saver = SaveOnSigterm()
    try:
        CLI(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=RunConfigSaver,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"callbacks": [saver, FinalStep(), ResumeOptimizerSettings()]},
            seed_everything_default=0,
            # a bad option raises (ArgumentError, below) instead of printing the whole usage
            parser_kwargs={"exit_on_error": False, **{s: {"exit_on_error": False} for s in CLI.subcommands()}},
            args=args,
        )
    except argparse.ArgumentError as err:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        sub = next((a for a in (args if args is not None else sys.argv[1:]) if a in CLI.subcommands()), "fit")
        print(f"error: {_condense_parse_error(str(err))} (`python -m train {sub} --help` lists the options, "
              f"`--model.help CLASS` those of a class)", file=sys.stderr, flush=True)
        sys.exit(2)
    except SIGTERMException:
        _sigterm_notice(saver)
        sys.exit(SIGTERM_EXIT)
    except _user_error_types() as err:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        cause = _root_cause(err, _user_error_types())
        where = _where(cause)
        print(f"\n(raised at {where}; {DEBUG_ENV}=1 shows the full traceback)" if where else "", file=sys.stderr)
        print(f"error: {cause}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
