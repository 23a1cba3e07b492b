"""The one export format: safetensors files of what trained + metadata + a model card.

An export folder holds, depending on the adapter:
- `spectral_shifts.safetensors`   δ per query layer, keyed by diffusers module path (SAVE)
- `query_weights.safetensors`     full to_q weights (Tune-A-Video, `full_query`)
- `lora_weights.safetensors`      peft LoRA tensors on the query projections (`lora`)
- `temporal_attention.safetensors` the temporal attention modules (when they trained)
- `export.json` + `README.md`     metadata (also in every safetensors header) and a model card.

`apply_export(video_unet, folder)` puts an export onto a freshly loaded base model and refuses
files trained on another base model (checksum of the query weights rounded to bf16; where only the
load precision differs, a per-layer sketch of them within 1%), with wrong shapes or missing layers.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from modules.adapters.spectral import SpectralShiftLinear, apply_spectral_shift
from modules.io_utils import atomic_directory
from modules.models.loading import tensor_checksum

FORMAT = "vidtune-export/1"
FILES = {
    "spectral": "spectral_shifts.safetensors",
    "full_query": "query_weights.safetensors",
    "lora": "lora_weights.safetensors",
    "temporal": "temporal_attention.safetensors",
    "text_encoder": "text_encoder_spectral_shifts.safetensors",
}
LORA_TARGET = r".*attn[12]\.to_q$"


class ExportMismatchError(ValueError):
    pass


def query_layer_names(unet: nn.Module) -> list[str]:
    return sorted(n for n, _ in unet.named_modules() if n.endswith(("attn1.to_q", "attn2.to_q")))


def _base_query_weights(unet: nn.Module) -> dict[str, torch.Tensor]:
    mods = dict(unet.named_modules())
    out = {}
    for n in query_layer_names(unet):
        m = mods[n]
        out[n] = (m.base_layer.weight if hasattr(m, "base_layer") else m.weight).detach()
    return out


def base_checksum(unet: nn.Module) -> str:
    """Identifies the base model by its query weights, rounded to bf16 (`tensor_checksum`): the same for
    fp32/fp16/bf16 loads of fp16-stored weights and for fp32/bf16 loads of fp32-stored ones."""
    return tensor_checksum(list(_base_query_weights(unet).values()))


FINGERPRINT_BUCKETS = 16
FINGERPRINT_TOLERANCE = 1e-2  # relative; a change of precision moves a layer's sketch by ~1e-3


def weight_sketch(w: torch.Tensor, buckets: int = FINGERPRINT_BUCKETS) -> list[float]:
    """A fixed random linear sketch of a weight (count sketch: each entry added with a ±1 sign into one
    of `buckets` sums, bucket and sign from a multiplicative hash of the index, in fp64). Distances
    between sketches track relative distances between weights (Johnson–Lindenstrauss-like)."""
    flat = w.detach().reshape(-1).cpu().double()
    h = (torch.arange(flat.numel(), dtype=torch.int64) * 2654435761 + 40503) & 0xFFFFFFFF
    bucket = (h >> 27) % buckets
    sign = 1.0 - 2.0 * ((h >> 26) & 1).double()
    sketch = torch.zeros(buckets, dtype=torch.float64).index_add_(0, bucket, sign * flat)
    return [float(f"{v:.7g}") for v in sketch.tolist()]


def base_fingerprint(unet: nn.Module) -> dict[str, list[float]]:
    """Per query layer, a sketch of its base weight: compared with a tolerance where the exact checksum
    cannot be dtype-invariant (an fp16 load of fp32-stored weights)."""
    return {n: weight_sketch(w) for n, w in _base_query_weights(unet).items()}


def fingerprint_distance(a: dict[str, list[float]], b: dict[str, list[float]]) -> float:
    """Largest per-layer relative distance ‖a − b‖ / ‖b‖ (inf when the layers differ)."""
    if set(a) != set(b):
        return float("inf")
    worst = 0.0
    for n in b:
        x, y = torch.tensor(a[n], dtype=torch.float64), torch.tensor(b[n], dtype=torch.float64)
        if x.shape != y.shape:
            return float("inf")
        worst = max(worst, float((x - y).norm() / y.norm().clamp_min(1e-30)))
    return worst


def collect_tensors(video_unet, adapter: str, temporal_trained: bool) -> dict[str, dict[str, torch.Tensor]]:
    unet = video_unet.unet
    files: dict[str, dict[str, torch.Tensor]] = {}
    if adapter == "spectral":
        files[FILES["spectral"]] = {
            n: m.delta.detach().float() for n, m in unet.named_modules()
            if isinstance(m, SpectralShiftLinear) and n in query_layer_names(unet)
        }
    elif adapter == "full_query":
        mods = dict(unet.named_modules())
        files[FILES["full_query"]] = {n: mods[n].weight.detach().float() for n in query_layer_names(unet)}
    elif adapter == "lora":
        from peft import get_peft_model_state_dict

        files[FILES["lora"]] = {k: v.float() for k, v in get_peft_model_state_dict(unet).items()}
    else:
        raise ValueError(f"unknown adapter {adapter!r}")
    if temporal_trained:
        files[FILES["temporal"]] = temporal_state(unet)
    return files


def temporal_state(unet: nn.Module) -> dict[str, torch.Tensor]:
    """Temporal-attention tensors with spectral-shifted layers materialised as plain weights, so they
    load into a freshly inflated model."""
    out = {}
    for n, m in unet.named_modules():
        if ".temporal." not in n + ".":
            continue
        if isinstance(m, SpectralShiftLinear):
            out[f"{n}.weight"] = m.shifted_weight().detach().float()
            if m.bias is not None:
                out[f"{n}.bias"] = m.bias.detach().float()
        elif isinstance(m, (nn.Linear, nn.LayerNorm)):
            for pn, p in m.named_parameters(recurse=False):
                out[f"{n}.{pn}"] = p.detach().float()
    return out


def model_card(meta: dict) -> str:
    hp = json.loads(meta["hyperparameters"])
    lines = [
        f"# {meta['method']} adapter ({meta['adapter']})", "",
        f"- base model: `{meta['base_model']}` (query-weight checksum `{meta['base_checksum']}`)",
        f"- frame attention: `{meta['frame_attention']}`; temporal attention trained: {meta['temporal']}",
        f"- training step: {meta.get('step') or 'unknown'}",
        f"- files: {', '.join(json.loads(meta['files']))}", "",
        "## Hyperparameters", "", "```json", json.dumps(hp, indent=2), "```", "",
        "## Load", "", "```python", "from modules.adapters.export import load_adapted_model",
        f"spec = load_adapted_model('{meta['base_model']}', '<this folder>')  # spec.model: the adapted video UNet", "```", "",
    ]
    return "\n".join(lines)


def save_export(out_dir: str | Path, video_unet, *, method: str, adapter: str, temporal_trained: bool,
                base_model: str, checksum: str, hyperparameters: dict, text_encoder=None,
                fingerprint: dict | None = None, step: int | None = None) -> Path:
    """Write the export as one unit: into a temporary sibling folder that then replaces `out_dir` (an
    existing export stays complete until the new one is), so the files never mix two trainings.
    `text_encoder`: given when its q_proj layers were spectral-shifted (their δ are exported too).
    `fingerprint`: `base_fingerprint` of the base before adaptation (in export.json only).
    `step`: the training step the weights come from (`export.json` "step")."""
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()) and not (out / "export.json").is_file():
        raise FileExistsError(f"{out} is a non-empty folder without export.json: not an export, so it is not "
                              "replaced; export into a new or empty folder (or an earlier export)")
    files = collect_tensors(video_unet, adapter, temporal_trained)
    if text_encoder is not None:
        files[FILES["text_encoder"]] = {n: m.delta.detach().float() for n, m in text_encoder.named_modules()
                                        if isinstance(m, SpectralShiftLinear)}
    shapes = {f: {k: list(v.shape) for k, v in t.items()} for f, t in files.items()}
    meta = {
        "format": FORMAT, "method": method, "adapter": adapter, "base_model": str(base_model),
        "base_checksum": checksum, "frame_attention": video_unet.frame_attention,
        "temporal": str(bool(temporal_trained)), "has_temporal_modules": str(bool(video_unet.has_temporal)),
        "hyperparameters": json.dumps(hyperparameters, default=str), "files": json.dumps(sorted(files)),
        "shapes": json.dumps(shapes), "step": "" if step is None else str(int(step)),
    }
    full_meta = {**meta, "step": None if step is None else int(step)}
    if fingerprint is not None:
        full_meta["base_fingerprint"] = json.dumps(fingerprint)
    with atomic_directory(out) as tmp:
        for fname, tensors in files.items():
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / fname), metadata=meta)
        (tmp / "README.md").write_text(model_card(meta))
        (tmp / "export.json").write_text(json.dumps(full_meta, indent=2))
    return out


def read_export(folder: str | Path) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    folder = Path(folder)
    if not (folder / "export.json").exists():
        raise FileNotFoundError(f"{folder} is not an export folder (no export.json); export with scripts/export.py")
    meta = json.loads((folder / "export.json").read_text())
    files = {}
    for fname in json.loads(meta["files"]):
        with safe_open(str(folder / fname), "pt") as f:
            files[fname] = {k: f.get_tensor(k) for k in f.keys()}
    return meta, files


def apply_export(video_unet, folder: str | Path, check_base: bool = True, text_encoder=None) -> dict:
    """Apply an export onto `video_unet` (freshly built on the base model) and, when the export holds
    text-encoder shifts, onto `text_encoder`; returns the metadata."""
    folder = Path(folder)
    meta, files = read_export(folder)
    unet = video_unet.unet
    if check_base:
        have = base_checksum(unet)
        if have != meta["base_checksum"]:
            # the same base in another precision (an fp16 load of fp32-stored weights) passes the sketch test
            dist = (fingerprint_distance(base_fingerprint(unet), json.loads(meta["base_fingerprint"]))
                    if meta.get("base_fingerprint") else float("inf"))
            if not dist <= FINGERPRINT_TOLERANCE:
                raise ExportMismatchError(
                    f"{folder} was trained on base model '{meta['base_model']}' (query checksum "
                    f"{meta['base_checksum']}), but the loaded base has checksum {have}"
                    + (f" and its query weights differ by {dist:.2g} (relative; > {FINGERPRINT_TOLERANCE})"
                       if dist != float("inf") else "")
                    + ". Load the export onto the base model it was trained on."
                )
    queries = query_layer_names(unet)
    mods = dict(unet.named_modules())
    adapter = meta["adapter"]
    if adapter == "spectral":
        deltas = files[FILES["spectral"]]
        _check_layers(folder / FILES["spectral"], deltas, queries,
                      {n: [min(mods[n].weight.shape)] for n in queries})
        layers = apply_spectral_shift(unet, queries)
        with torch.no_grad():
            for n, m in layers.items():
                m.delta.copy_(deltas[n])
    elif adapter == "full_query":
        ws = files[FILES["full_query"]]
        _check_layers(folder / FILES["full_query"], ws, queries, {n: list(mods[n].weight.shape) for n in queries})
        with torch.no_grad():
            for n in queries:
                mods[n].weight.copy_(ws[n])
    elif adapter == "lora":
        from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

        hp = json.loads(meta["hyperparameters"])
        cfg = LoraConfig(r=hp["lora_rank"], lora_alpha=hp.get("lora_alpha", hp["lora_rank"]),
                         target_modules=LORA_TARGET, init_lora_weights=True)
        inject_adapter_in_model(cfg, unet)
        set_peft_model_state_dict(unet, files[FILES["lora"]])
    if FILES["temporal"] in files:
        if not video_unet.has_temporal:
            raise ExportMismatchError(f"{folder} holds temporal attention but the model was built without it")
        temporal = files[FILES["temporal"]]
        own = {n: p for n, p in unet.state_dict().items() if ".temporal." in n}
        _check_layers(folder / FILES["temporal"], temporal, sorted(own), {n: list(p.shape) for n, p in own.items()})
        unet.load_state_dict(temporal, strict=False)
    if FILES["text_encoder"] in files:
        if text_encoder is None:
            raise ExportMismatchError(f"{folder} holds text-encoder shifts: pass text_encoder= (load_adapted_model does)")
        te = files[FILES["text_encoder"]]
        te_mods = dict(text_encoder.named_modules())
        names = sorted(n for n in te_mods if n.endswith("q_proj"))
        _check_layers(folder / FILES["text_encoder"], te, names, {n: [min(te_mods[n].weight.shape)] for n in names})
        with torch.no_grad():
            for n, m in apply_spectral_shift(text_encoder, names).items():
                m.delta.copy_(te[n])
    video_unet.set_frame_attention(meta["frame_attention"])
    return meta


def _check_layers(path: Path, tensors: dict, expected: list[str], shapes: dict) -> None:
    missing = [n for n in expected if n not in tensors]
    extra = [n for n in tensors if n not in shapes]
    if missing or extra:
        raise ExportMismatchError(
            f"{path}: layers do not match the model: missing {missing[:3]}{'...' if len(missing) > 3 else ''}"
            f" ({len(missing)}), unexpected {extra[:3]} ({len(extra)}). Was it exported from another architecture?"
        )
    for n in expected:
        if list(tensors[n].shape) != list(shapes[n]):
            raise ExportMismatchError(
                f"{path}: tensor '{n}' has shape {list(tensors[n].shape)}, the model needs {list(shapes[n])}."
            )


def load_adapted_model(base: str, export_dir: str | Path, dtype: torch.dtype = torch.float32):
    """Load the base model, inflate it as the export says and apply the export: the family spec,
    whose `model` is the adapted video UNet (`spec.model`)."""
    from modules.models.spec import load_model

    meta = json.loads((Path(export_dir) / "export.json").read_text()) if (Path(export_dir) / "export.json").exists() else None
    if meta is None:
        raise FileNotFoundError(f"{export_dir} is not an export folder (no export.json)")
    spec = load_model(base, dtype=dtype)
    vunet = spec.inflate(meta["frame_attention"], temporal=meta["has_temporal_modules"] == "True")
    apply_export(vunet, export_dir, text_encoder=spec.text_encoders[0])
    return spec
