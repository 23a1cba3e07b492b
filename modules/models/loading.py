"""The one way to load model parts: a local diffusers-layout folder, or a named tiny preset.

A folder holds `unet/`, `text_encoder/`, `tokenizer/`, `scheduler/` and optionally `vae/`
(no `vae/` = a pixel-space model: encode/decode are the identity). Nothing is fetched from a hub.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import AutoTokenizer, CLIPTextModel

REPO_ROOT = Path(__file__).resolve().parents[2]

DOWNLOAD_HINT = (
    "Download a diffusers-format Stable Diffusion 1.x folder once on a machine with network, e.g.\n"
    "  huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir {path}\n"
    "(it must contain unet/, vae/, text_encoder/, tokenizer/, scheduler/), or use a tiny preset: "
    "{presets}."
)


class ModelNotFoundError(FileNotFoundError):
    pass


@dataclass
class DiffusionParts:
    unet: UNet2DConditionModel
    vae: AutoencoderKL | None
    text_encoder: CLIPTextModel
    tokenizer: object
    scheduler: DDIMScheduler
    path: str
    model_id: str

    @property
    def pixel_space(self) -> bool:
        return self.vae is None


def presets() -> dict[str, callable]:
    from modules.models import tiny

    return {"tiny-sd": tiny.build_tiny_sd, "tiny-world": tiny.world_path}


def resolve_model_path(name_or_path: str) -> Path:
    """Map a preset name to a folder (building it once if needed) or check a local folder."""
    table = presets()
    if name_or_path in table:
        return Path(table[name_or_path]())
    path = Path(name_or_path).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    if not path.is_dir():
        raise ModelNotFoundError(
            f"Model folder '{name_or_path}' does not exist. "
            + DOWNLOAD_HINT.format(path=name_or_path, presets=", ".join(table))
        )
    missing = [p for p in ("unet", "text_encoder", "tokenizer", "scheduler") if not (path / p).is_dir()]
    if missing:
        raise ModelNotFoundError(
            f"Model folder '{path}' lacks {', '.join(s + '/' for s in missing)}. "
            + DOWNLOAD_HINT.format(path=path, presets=", ".join(table))
        )
    return path


def load_parts(name_or_path: str, dtype: torch.dtype = torch.float32) -> DiffusionParts:
    path = resolve_model_path(name_or_path)
    unet = UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=dtype)
    vae = AutoencoderKL.from_pretrained(path / "vae", torch_dtype=dtype) if (path / "vae").is_dir() else None
    text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder", torch_dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
    scheduler = DDIMScheduler.from_pretrained(path / "scheduler")
    for m in (unet, vae, text_encoder):
        if m is not None:
            m.requires_grad_(False).eval()
    model_id = name_or_path
    index = path / "model_index.json"
    if index.exists():
        model_id = json.loads(index.read_text()).get("_name_or_path", model_id) or model_id
    return DiffusionParts(unet, vae, text_encoder, tokenizer, scheduler, str(path), model_id)


def encode_prompts(parts: DiffusionParts, prompts: list[str], grad: bool = False) -> torch.Tensor:
    """Text embeddings `(B, L, D)` (last hidden state), as SD's UNet consumes them."""
    tok = parts.tokenizer(
        prompts, padding="max_length", max_length=parts.tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    )
    device = next(parts.text_encoder.parameters()).device
    with torch.set_grad_enabled(grad):
        return parts.text_encoder(tok.input_ids.to(device))[0]


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
