"""Export the adapted weights of a training checkpoint (same files as the ExportAdapter callback).

    python scripts/export.py runs/save-tiny/checkpoints/last.ckpt --out runs/save-tiny/export
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="export folder (default: <run>/export)")
    args = ap.parse_args(argv)
    import torch

    if not args.checkpoint.is_file():
        sys.exit(f"error: checkpoint {args.checkpoint} not found")
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    if "module_class" not in ckpt:
        sys.exit(f"error: {args.checkpoint} was not written by this framework (no 'module_class')")
    mod_name, cls_name = ckpt["module_class"].rsplit(".", 1)
    cls = getattr(importlib.import_module(mod_name), cls_name)
    module = cls.load_from_checkpoint(args.checkpoint, map_location="cpu")
    out = args.out or args.checkpoint.parent.parent / "export"
    module.export(out)
    size = sum(p.stat().st_size for p in Path(out).glob("*.safetensors"))
    print(f"exported {ckpt['module_class']} step {ckpt.get('global_step')} -> {out} ({size / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
