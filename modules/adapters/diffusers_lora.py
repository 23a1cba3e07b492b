"""The `diffusers-lora` export format: `pytorch_lora_weights.safetensors` in the diffusers/peft key
format (written by the family's own pipeline class, `save_lora_weights`, with the peft adapter
config in its metadata), so `DiffusionPipeline.load_lora_weights(folder)` of the real pipelines
reads it; plus `export.json` with what diffusers does not check (base-model checksum, family,
rank, the training step) for `load_diffusers_lora`, which refuses another base or rank.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

WEIGHT_NAME = "pytorch_lora_weights.safetensors"
FORMAT = "diffusers-lora"

# family -> (the diffusers pipeline that loads it, the prefix of the denoiser's keys)
PIPELINES = {
    "sd": ("StableDiffusionPipeline", "unet"),
    "sdxl": ("StableDiffusionXLPipeline", "unet"),
    "unet3d": ("TextToVideoSDPipeline", "unet"),
    "cogvideox": ("CogVideoXPipeline", "transformer"),
}


class LoraMismatchError(ValueError):
    pass


def _pipeline(family: str):
    import diffusers

    if family not in PIPELINES:
        raise ValueError(f"no diffusers LoRA format for model family {family!r} (have {sorted(PIPELINES)})")
    name, prefix = PIPELINES[family]
    return getattr(diffusers, name), prefix


def lora_rank(state: dict[str, torch.Tensor]) -> int:
    ranks = {v.shape[0] for k, v in state.items() if "lora_A" in k}
    if len(ranks) != 1:
        raise LoraMismatchError(f"LoRA tensors have ranks {sorted(ranks)}; expected one rank")
    return ranks.pop()


def save_diffusers_lora(network: nn.Module, family: str, out_dir: str | Path, meta: dict,
                        adapter_name: str = "default") -> Path:
    """Write `network`'s injected LoRA adapter `adapter_name` into `out_dir` (which is created;
    the caller writes exports atomically). `meta` (base_model, base_checksum, step, ...) goes to
    export.json."""
    from peft.utils import get_peft_model_state_dict

    pipe_cls, prefix = _pipeline(family)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() for k, v in
             get_peft_model_state_dict(network, adapter_name=adapter_name).items()}
    if not state:
        raise ValueError(f"the {family} network has no LoRA adapter {adapter_name!r} to export")
    config = network.peft_config[adapter_name].to_dict()
    # dropout is a training setting: with it in the file, diffusers' load_lora_weights adds Dropout layers in
    # train mode to an eval-mode model, and inference outputs become random
    config["lora_dropout"] = 0.0
    pipe_cls.save_lora_weights(out, **{f"{prefix}_lora_layers": state,
                                       f"{prefix}_lora_adapter_metadata": config})
    info = {**meta, "format": FORMAT, "family": family, "pipeline": pipe_cls.__name__, "prefix": prefix,
            "rank": lora_rank(state), "lora_alpha": config.get("lora_alpha"), "weight_name": WEIGHT_NAME,
            "tensors": len(state)}
    (out / "export.json").write_text(json.dumps(info, indent=2, default=str))
    return out


def read_lora_file(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise LoraMismatchError(f"{path}: not a readable safetensors LoRA file ({e}); re-export it") from e


def load_diffusers_lora(network: nn.Module, folder: str | Path, checksum: str | None = None,
                        rank: int | None = None, adapter_name: str = "default") -> dict:
    """Load a `diffusers-lora` export onto `network` through diffusers' own `load_lora_adapter`,
    refusing a file for another base (checksum of `export.json`) or another rank."""
    folder = Path(folder)
    meta_path = folder / "export.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} is not a diffusers-lora export (no export.json beside {WEIGHT_NAME})")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise LoraMismatchError(f"{meta_path}: broken JSON ({e}); re-export the LoRA") from e
    if meta.get("format") != FORMAT:
        raise LoraMismatchError(f"{meta_path}: format is {meta.get('format')!r}, not {FORMAT!r}")
    if checksum is not None and meta.get("base_checksum") not in (None, checksum):
        raise LoraMismatchError(
            f"{folder / WEIGHT_NAME} was trained on base '{meta.get('base_model')}' (checksum "
            f"{meta.get('base_checksum')}), but the loaded base has checksum {checksum}: load it onto that base."
        )
    state = read_lora_file(folder / WEIGHT_NAME)
    have = lora_rank(state)
    if rank is not None and have != rank:
        raise LoraMismatchError(f"{folder / WEIGHT_NAME}: LoRA rank {have}, but rank {rank} was asked for "
                                f"(field `rank` in {meta_path} says {meta.get('rank')})")
    prefix = meta.get("prefix", "unet")
    network.load_lora_adapter(state, prefix=prefix, adapter_name=adapter_name)
    return meta
