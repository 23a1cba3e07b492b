"""Model loading, kept for callers written before model families: `load_parts(name)` is
`load_model(name)` (a `ModelSpec`; for SD folders it still has `.unet`, `.vae`, `.text_encoder`,
`.tokenizer`, `.scheduler`, `.pixel_space`, `.path`, `.model_id`). New code uses
`modules.models.spec` (text embeddings: `spec.encode_prompt(prompts)["encoder_hidden_states"]`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]


class ModelNotFoundError(FileNotFoundError):
    pass


def presets() -> dict:
    from modules.models.spec import PRESETS

    return dict(PRESETS)


def resolve_model_path(name_or_path: str) -> Path:
    """Map a preset name to a folder (building it once if needed) or check a local folder."""
    from modules.models.spec import resolve_model_path as resolve

    return resolve(name_or_path)


def load_parts(name_or_path: str, dtype: torch.dtype = torch.float32):
    """Alias of `modules.models.spec.load_model` (returns the family's `ModelSpec`)."""
    from modules.models.spec import load_model

    return load_model(name_or_path, dtype)


def tensor_checksum(tensors: list[torch.Tensor]) -> str:
    """sha256 over the tensors rounded to bf16 (round to nearest even), hashed as fp32 bytes: identifies
    the base weights an adapter was trained on, whatever dtype they were loaded in.

    Equal for fp32, fp16 and bf16 loads of weights stored in fp16 (or bf16): an fp32 or fp16 load holds
    the stored value v exactly, a bf16 load holds bf16(v), and bf16(bf16(v)) = bf16(v). Equal for fp32
    and bf16 loads of fp32-stored weights. An fp16 load of fp32-stored weights rounds twice
    (fp32 → fp16 → bf16) and differs on ~6% of the weights; no exact hash can equal both roundings of
    every value, which is why exports also carry a tolerance-compared sketch
    (`modules.adapters.export.base_fingerprint`). Pre-rounded input hashes the same (values unchanged
    from the checksums of earlier versions, which rounded before calling this)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().to(torch.bfloat16).float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
