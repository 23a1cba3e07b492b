"""One registry of export formats. Every trainable method exports through it (the `ExportAdapter`
callback, `scripts/export.py`), each format a function `(module, out_dir, step) -> folder` that
writes one complete folder atomically (`modules.io_utils.atomic_directory`):

- `vidtune`: the method's own adapter files (SAVE: spectral shifts δ + temporal attention +
  metadata; `modules/adapters/export.py`), loaded back by `load_adapted_model`;
- `named-tensors`: any named subset of the network's tensors (what trained: e.g. VMC's temporal
  q/k/v) in `tensors.safetensors` + `export.json` (base checksum, names, shapes, step), loaded back
  by `load_named_tensors`, which refuses another base, missing or extra names and other shapes;
- `diffusers-lora`: `pytorch_lora_weights.safetensors` that the real pipelines' `load_lora_weights`
  read (`modules/adapters/diffusers_lora.py`);
- `diffusers-model`: the whole denoiser, LoRA fused in, as `<folder>/<unet|transformer>/`
  (`from_pretrained(folder, subfolder=...)`) + a model card. The merged weights are computed beside
  the model (it is neither copied nor modified); a plain `save_pretrained` with peft layers still injected
  would write `base_layer`/`lora_A` keys that `from_pretrained` ignores, re-initialising those
  weights at random (tests/test_exports.py shows it).

A module declares its formats with `export_formats()`; the first is written to `<run>/export`,
the others to `<run>/export-<format>`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from modules.io_utils import atomic_directory

ExportWriter = Callable[[object, Path, "int | None"], Path]
EXPORT_FORMATS: dict[str, ExportWriter] = {}


class ExportFormatError(ValueError):
    pass


def register_format(name: str):
    def deco(fn: ExportWriter) -> ExportWriter:
        EXPORT_FORMATS[name] = fn
        return fn

    return deco


def export_dir(run_dir: str | Path, fmt: str, primary: bool) -> Path:
    return Path(run_dir) / ("export" if primary else f"export-{fmt}")


def write_export(module, out_dir: str | Path, fmt: str, step: int | None = None) -> Path:
    if fmt not in EXPORT_FORMATS:
        raise ExportFormatError(f"unknown export format {fmt!r}; one of {sorted(EXPORT_FORMATS)}")
    return EXPORT_FORMATS[fmt](module, Path(out_dir), step)


def folder_size(folder: Path) -> int:
    """Bytes of every file under `folder`, subfolders included."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _meta(module, fmt: str, step) -> dict:
    spec = module.spec
    return {"format": fmt, "method": getattr(module, "method", type(module).__name__), "family": spec.family,
            "base_model": str(spec.model_id), "base_checksum": getattr(module, "base_checksum", None) or spec.checksum(),
            "step": None if step is None else int(step)}


# -- vidtune: the method's own format ---------------------------------------------------------
@register_format("vidtune")
def _write_vidtune(module, out: Path, step) -> Path:
    return module.export(out, step=step)


# -- named tensors ------------------------------------------------------------------------------
NAMED_TENSORS_FILE = "tensors.safetensors"


def trained_tensors(network: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().contiguous().cpu() for n, p in network.named_parameters() if p.requires_grad}


@register_format("named-tensors")
def write_named_tensors(module, out: Path, step, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """The network's trainable tensors (or `tensors`) by their module path in the denoiser."""
    from safetensors.torch import save_file

    tensors = tensors if tensors is not None else trained_tensors(module.spec.network)
    if not tensors:
        raise ExportFormatError(f"{type(module).__name__}: no trainable tensors in the denoiser to export")
    meta = {**_meta(module, "named-tensors", step), "names": sorted(tensors),
            "shapes": {k: list(v.shape) for k, v in tensors.items()}}
    with atomic_directory(out) as tmp:
        save_file(tensors, str(tmp / NAMED_TENSORS_FILE), metadata={"format": "named-tensors",
                                                                     "base_checksum": str(meta["base_checksum"])})
        (tmp / "export.json").write_text(json.dumps(meta, indent=2))
        (tmp / "README.md").write_text(_card(meta, f"{len(tensors)} tensors of the {meta['family']} denoiser "
                                                  f"(`{NAMED_TENSORS_FILE}`), loaded with "
                                                  "`modules.adapters.formats.load_named_tensors(spec.network, folder)`."))
    return out


def _read_meta(folder: Path, fmt: str) -> dict:
    path = folder / "export.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a {fmt} export (no export.json)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ExportFormatError(f"{path}: broken JSON ({e}); re-export") from e
    if meta.get("format") != fmt:
        raise ExportFormatError(f"{path}: field `format` is {meta.get('format')!r}, expected {fmt!r}")
    return meta


def load_named_tensors(network: nn.Module, folder: str | Path, checksum: str | None = None) -> dict:
    """Copy a `named-tensors` export into `network` (the same denoiser layout it was trained on)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = _read_meta(folder, "named-tensors")
    if checksum is not None and meta.get("base_checksum") != checksum:
        raise ExportFormatError(f"{folder}: trained on base '{meta.get('base_model')}' (checksum "
                                f"{meta.get('base_checksum')}), the loaded base has checksum {checksum}")
    try:
        tensors = load_file(str(folder / NAMED_TENSORS_FILE))
    except Exception as e:  # noqa: BLE001  (truncated or foreign file)
        raise ExportFormatError(f"{folder / NAMED_TENSORS_FILE}: unreadable ({e}); re-export") from e
    own = dict(network.named_parameters())
    missing, extra = sorted(set(meta["names"]) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or extra:
        raise ExportFormatError(f"{folder / NAMED_TENSORS_FILE}: tensors do not match the model: missing "
                                f"{missing[:3]} ({len(missing)}), not in the model {extra[:3]} ({len(extra)})")
    for n, t in tensors.items():
        if own[n].shape != t.shape:
            raise ExportFormatError(f"{folder / NAMED_TENSORS_FILE}: '{n}' has shape {list(t.shape)}, the model "
                                    f"needs {list(own[n].shape)}")
    with torch.no_grad():
        for n, t in tensors.items():
            own[n].copy_(t)
    return meta


# -- diffusers LoRA -----------------------------------------------------------------------------
@register_format("diffusers-lora")
def _write_diffusers_lora(module, out: Path, step) -> Path:
    from modules.adapters.diffusers_lora import save_diffusers_lora

    meta = _meta(module, "diffusers-lora", step)
    adapter = getattr(module, "lora_adapter_name", "default")
    with atomic_directory(out) as tmp:
        save_diffusers_lora(module.spec.network, module.spec.family, tmp, meta, adapter_name=adapter)
        (tmp / "README.md").write_text(_card(meta, "LoRA in the diffusers format: "
                                                   "`pipe.load_lora_weights(folder)` on the base model."))
    return out


# -- diffusers model ----------------------------------------------------------------------------
def merged_state_dict(network: nn.Module) -> dict[str, torch.Tensor]:
    """The network's weights with every active LoRA added in (W + ΔW, from peft's own
    `get_delta_weight`) and the peft wrappers' names undone (`x.base_layer.weight` -> `x.weight`,
    `lora_*` dropped): what `from_pretrained` expects. The network itself is not modified (merging
    and un-merging in place would move the base weights by rounding)."""
    from peft.tuners.lora import LoraLayer

    state = {}
    for k, v in network.state_dict().items():
        if "lora_" in k:
            continue
        state[k.replace(".base_layer.", ".")] = v.detach().contiguous().cpu().clone()
    for name, m in network.named_modules():
        if isinstance(m, LoraLayer) and not m.merged:
            key = f"{name}.weight"
            with torch.no_grad():
                for adapter in m.active_adapters:
                    if adapter in m.lora_A:
                        state[key] = state[key] + m.get_delta_weight(adapter).detach().cpu().to(state[key].dtype)
    return state


@register_format("diffusers-model")
def write_diffusers_model(module, out: Path, step) -> Path:
    from safetensors.torch import save_file

    spec = module.spec
    network = spec.network
    sub = "transformer" if spec.family == "cogvideox" else "unet"
    meta = {**_meta(module, "diffusers-model", step), "subfolder": sub, "class": type(network).__name__,
            "in_channels": int(network.config.in_channels)}
    meta.update(getattr(module, "model_card_fields", lambda: {})())
    state = merged_state_dict(network)
    with atomic_directory(out) as tmp:
        network.save_config(tmp / sub)
        save_file(state, str(tmp / sub / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
        (tmp / "export.json").write_text(json.dumps(meta, indent=2, default=str))
        (tmp / "README.md").write_text(_card(meta, f"The whole {type(network).__name__} (any LoRA fused in): "
                                                   f"`{type(network).__name__}.from_pretrained(folder, subfolder='{sub}')`."))
    return out


def _card(meta: dict, what: str) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in meta.items() if k not in ("names", "shapes"))
    return f"# vidtune export ({meta['format']})\n\n{what}\n\n| field | value |\n|---|---|\n{rows}\n"
