"""Export the adapted weights of a training checkpoint (same files as the ExportAdapter callback).

    python scripts/export.py runs/save-tiny/checkpoints/last.ckpt --out runs/save-tiny/export

The checkpoint is read with `weights_only=True` (a file whose pickle would run code is refused) and
must hold exactly the module's trainable tensors. Without `--out` the export goes to `<run>/export`
and an export already there is kept (the command stops) unless `--overwrite`; a folder named by
`--out` is replaced. Either way the new export replaces the old one as a unit, with the checkpoint's
step in `export.json`.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLI_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"


def module_class(name: object, path: Path):
    """The LightningModule class a checkpoint names, only from this project's `modules` package."""
    import lightning as L

    if not isinstance(name, str) or not name.startswith("modules.") or "." not in name[len("modules."):]:
        raise ValueError(f"{path}: 'module_class' is {name!r}; expected a class of this project, e.g. modules.save.SAVEModule")
    mod_name, cls_name = name.rsplit(".", 1)
    cls = getattr(importlib.import_module(mod_name), cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, L.LightningModule)):
        raise ValueError(f"{path}: 'module_class' {name!r} is not a LightningModule of this project")
    return cls


def build_module(ckpt: dict, path: Path):
    """The module the checkpoint was trained with (its hyper-parameters), its trainable tensors loaded
    strictly: the checkpoint must hold exactly the tensors that train, nothing missing or extra."""
    cls = module_class(ckpt.get("module_class"), path)
    hp = dict(ckpt.get("hyper_parameters") or {})
    hp.pop("_class_path", None)
    instantiator = hp.pop("_instantiator", None)
    if instantiator is None:
        module = cls(**hp)
    elif instantiator == CLI_INSTANTIATOR:  # written by the CLI: hyper-parameters as parsed config values
        from lightning.pytorch.cli import instantiate_module

        module = instantiate_module(cls, hp)
    else:
        raise ValueError(f"{path}: unexpected hyper-parameter instantiator {instantiator!r}")
    module.on_load_checkpoint(ckpt)  # the project's modules check the base model and the tensor names
    state = ckpt.get("state_dict") or {}
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    missing, extra = sorted(trainable - set(state)), sorted(set(state) - trainable)
    if missing or extra:
        raise ValueError(
            f"{path}: its tensors are not this model's trainable set: {len(missing)} missing (e.g. {missing[:2]}), "
            f"{len(extra)} unexpected (e.g. {extra[:2]})"
        )
    result = module.load_state_dict(state, strict=False)  # the frozen base is not in the checkpoint
    assert not result.unexpected_keys and not (set(result.missing_keys) & trainable)
    return module


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--out", type=Path, default=None,
                    help="export folder (replaced if it exists; default: <run>/export, kept unless --overwrite)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing <run>/export")
    args = ap.parse_args(argv)

    from modules.callbacks.checkpoint_io import UnsafeCheckpointError, load_checkpoint_file

    if not args.checkpoint.is_file():
        sys.exit(f"error: checkpoint {args.checkpoint} not found")
    try:
        ckpt = load_checkpoint_file(args.checkpoint)
    except UnsafeCheckpointError as e:
        sys.exit(f"error: {e}")
    if "module_class" not in ckpt:
        sys.exit(f"error: {args.checkpoint} was not written by this framework (no 'module_class')")
    out = args.out or args.checkpoint.resolve().parent.parent / "export"
    if args.out is None and out.exists() and any(out.iterdir()) and not args.overwrite:
        sys.exit(f"error: {out} already holds an export (the one training wrote); it is kept. "
                 f"Pass --out <folder> to export elsewhere, or --overwrite to replace it.")
    try:
        module = build_module(ckpt, args.checkpoint)
    except ValueError as e:
        sys.exit(f"error: {e}")
    step = ckpt.get("global_step")
    if "step" in inspect.signature(module.export).parameters:
        module.export(out, step=step)
    else:
        module.export(out)
    size = sum(p.stat().st_size for p in Path(out).glob("*.safetensors"))
    print(f"exported {ckpt['module_class']} step {step} -> {out} ({size / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
