"""Checkpoint files: written atomically (a crash mid-write never corrupts the previous checkpoint) and
read without unpickling code.

`load_checkpoint_file` is the one way this project reads a `.ckpt`: `torch.load(weights_only=True)`
(explicitly, so `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` cannot turn it off), with only the project's own
hyper-parameter dataclasses allowed beyond tensors and plain containers (`SAFE_GLOBALS`). A file whose
pickle names anything else (a function to call, a class to build) is refused with
`UnsafeCheckpointError` before any of it runs. `AtomicCheckpointIO` (installed by `train/cli.py`) uses
it for Lightning's resume (`--ckpt_path`), `scripts/export.py` for exports.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from modules.io_utils import atomic_write


class UnsafeCheckpointError(pickle.UnpicklingError):
    pass


def safe_globals() -> list:
    """Classes a project checkpoint may hold besides tensors and plain containers: the dataclasses that
    appear in hyper-parameters when a module is built in Python (the CLI stores plain dicts)."""
    from modules.editing import EditConfig

    return [EditConfig]


def load_checkpoint_file(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint with `weights_only=True`; refuse (UnsafeCheckpointError) one that needs more."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        with torch.serialization.safe_globals(safe_globals()):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"GLOBAL (\S+)", str(e))
        detail = f"it names {m.group(1)}" if m else next(
            (ln.strip() for ln in str(e).splitlines() if "WeightsUnpickler error" in ln), "")[:200]
        raise UnsafeCheckpointError(
            f"refusing to load {path}: its pickle asks for Python objects beyond tensors and plain data "
            f"({detail}). Loading it could run code from the file, so it is not loaded; checkpoints "
            "written by this framework never need that. Only use checkpoints from a source you trust, and "
            "do not work around this with weights_only=False."
        ) from None
    if not isinstance(ckpt, dict):
        raise UnsafeCheckpointError(f"{path} is not a Lightning checkpoint (it holds a {type(ckpt).__name__})")
    return ckpt


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))
        print(f"[checkpoint] {path} ({path.stat().st_size / 1024:.1f} KiB, trainable tensors + optimizer state)")

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None):
        """Lightning's resume: always weights_only (whatever `weights_only` the caller passes)."""
        return load_checkpoint_file(path, map_location=map_location)
