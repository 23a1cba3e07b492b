"""SAVE (spectral-shift fine-tuning) and its baselines on an inflated SD UNet, one LightningModule.

`adapter`: `spectral` (SAVE: only singular-value shifts δ of the query projections train),
`full_query` (Tune-A-Video: the to_q weights train), `lora` (peft LoRA on the same layers).
`temporal`: `full` (train the temporal attention), `spectral` (δ of its to_q/to_k/to_v; its output
projection, zero-initialised so the inflated model starts equal to the image model, has singular values
0 that ReLU(σ + δ) would never let move, so it trains in full with the LayerNorm, at `lr_temporal`;
the temporal δ train at `lr_delta` and enter the regulariser), `frozen`.
`spectral_lambda = 0` with `adapter: spectral` is "SAVE w/o regulariser".
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import torch

from modules.adapters.export import LORA_TARGET, base_checksum, base_fingerprint, query_layer_names, save_export
from modules.adapters.spectral import SpectralShiftLinear, apply_spectral_shift, spectral_layers
from modules.editing import EditConfig
from modules.models.video_unet import FRAME_ATTENTION_MODES, FrameAttention
from modules.models.spec import ModelFamilyError, load_model
from modules.video_tuning import VideoTuningModule

Adapter = Literal["spectral", "full_query", "lora"]
Temporal = Literal["full", "spectral", "frozen"]
ADAPTERS: tuple[str, ...] = get_args(Adapter)
TEMPORAL: tuple[str, ...] = get_args(Temporal)
FAMILIES = ("sd", "sdxl")


class SAVEModule(VideoTuningModule):
    def __init__(
        self,
        model: str = "tiny-sd",
        frame_attention: FrameAttention = "first",
        adapter: Adapter = "spectral",
        temporal: Temporal = "full",
        spectral_lambda: float = 1e-3,
        lr_delta: float = 1e-3,
        lr_query: float = 3e-5,
        lr_lora: float = 1e-4,
        lr_temporal: float = 3e-5,
        weight_decay: float = 1e-3,
        lora_rank: int = 4,
        train_text_encoder: bool = False,
        gradient_checkpointing: bool = False,
        base_dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        seed: int = 0,
        edit: EditConfig | None = None,
    ):
        """
        Args:
            model: local diffusers folder of an SD 1.x model, or a preset (`tiny-sd`, `tiny-world`).
            frame_attention: keys/values of `attn1` from frame 0 (`first`, paper), frames {0, i-1}
                (`sparse_causal`, released code), all frames (`full`) or own frame (`per_frame`).
            adapter: `spectral` (SAVE), `full_query` (Tune-A-Video), `lora` (rank `lora_rank`).
            temporal: how the inserted temporal attention trains: `full`, `spectral` (δ on q/k/v; the
                zero-initialised output projection and the LayerNorm in full) or `frozen`.
            spectral_lambda: λ of the regulariser λ Σ δᵀ diag(σ) δ (paper 1e-3; 5e-2 multi-attribute).
            lr_delta: learning rate of the spectral shifts δ (paper 1e-3).
            lr_query: learning rate of full to_q weights (Tune-A-Video 3e-5).
            lr_lora: learning rate of LoRA weights.
            lr_temporal: learning rate of the temporal attention (released configs 3e-5).
            weight_decay: AdamW weight decay (all groups).
            train_text_encoder: also spectral-shift the text encoder's q_proj layers.
            gradient_checkpointing: trade compute for memory in the UNet.
            base_dtype: dtype of the frozen base (`bfloat16` on GPUs); trainable tensors stay fp32.
            seed: seeds the per-step noise/timesteps (with the step and rank).
            edit: how validation/predict edit the clip.
        """
        super().__init__(seed=seed, edit=edit)
        if frame_attention not in FRAME_ATTENTION_MODES:
            raise ValueError(f"model.frame_attention must be one of {FRAME_ATTENTION_MODES}, got {frame_attention!r}")
        if adapter not in ADAPTERS:
            raise ValueError(f"model.adapter must be one of {ADAPTERS}, got {adapter!r}")
        if temporal not in TEMPORAL:
            raise ValueError(f"model.temporal must be one of {TEMPORAL}, got {temporal!r}")
        if spectral_lambda < 0:
            raise ValueError(f"model.spectral_lambda must be >= 0 (got {spectral_lambda}); the paper uses 1e-3")
        self.save_hyperparameters()
        dtype = getattr(torch, base_dtype)
        self.spec = load_model(model, dtype=dtype)
        if self.spec.family not in FAMILIES:
            raise ModelFamilyError(
                f"model.model '{model}' is a '{self.spec.family}' model; SAVE inflates an image UNet "
                f"(families {FAMILIES}). Use an SD 1.x/2.x or SDXL folder, or a preset such as tiny-sd / tiny-world."
            )
        self.base_checksum = base_checksum(self.spec.unet)
        self.base_fingerprint = base_fingerprint(self.spec.unet)  # tolerance check for other precisions
        self.video_unet = self.spec.inflate(frame_attention, temporal=True)
        if gradient_checkpointing:
            self.video_unet.enable_gradient_checkpointing()
        for i, te in enumerate(self.spec.text_encoders):  # registered: they move with the module
            setattr(self, "text_encoder" if i == 0 else f"text_encoder_{i + 1}", te)
        self.vae = self.spec.vae
        self._setup_trainable()

    def _setup_trainable(self) -> None:
        hp = self.hparams
        unet = self.video_unet.unet
        self.video_unet.requires_grad_(False)
        queries = query_layer_names(unet)
        if hp.adapter == "spectral":
            apply_spectral_shift(unet, queries)  # δ trainable, fp32
        elif hp.adapter == "full_query":
            mods = dict(unet.named_modules())
            for n in queries:
                mods[n].float().requires_grad_(True)
        else:
            from peft import LoraConfig, inject_adapter_in_model

            cfg = LoraConfig(r=hp.lora_rank, lora_alpha=hp.lora_rank, target_modules=LORA_TARGET)
            inject_adapter_in_model(cfg, unet)
            for n, p in unet.named_parameters():
                if "lora_" in n:
                    p.data = p.data.float()
                    p.requires_grad_(True)
        temporal_mods = [m for n, m in unet.named_modules() if n.endswith(".temporal")]
        if hp.temporal == "full":
            for m in temporal_mods:
                m.float().requires_grad_(True)
        elif hp.temporal == "spectral":
            # δ on q/k/v; the output projection is zero-initialised (σ = 0: ReLU(σ + δ) would block every
            # gradient through it for ever), so it trains in full, with the LayerNorm (lr_temporal)
            names = [n for n, m in unet.named_modules()
                     if n.endswith((".temporal.attn_temp.to_q", ".temporal.attn_temp.to_k", ".temporal.attn_temp.to_v"))]
            apply_spectral_shift(unet, names)
            for m in temporal_mods:
                m.attn_temp.to_out[0].float().requires_grad_(True)
                m.norm_temp.float().requires_grad_(True)
        if hp.train_text_encoder:
            te = self.spec.text_encoders[0]
            apply_spectral_shift(te, [n for n, m in te.named_modules() if n.endswith("q_proj")])

    def train_text_encoder(self) -> bool:
        return bool(self.hparams.train_text_encoder)

    @property
    def method(self) -> str:
        return {"spectral": "save", "full_query": "tune-a-video", "lora": "lora"}[self.hparams.adapter]

    # -- loss ------------------------------------------------------------------------------------
    def spectral_regulariser(self) -> torch.Tensor:
        regs = [m.regulariser() for m in spectral_layers(self).values()]
        return torch.stack(regs).sum() if regs else torch.zeros((), device=self.device)

    def extra_loss(self, batch, aux) -> dict[str, torch.Tensor]:
        if not spectral_layers(self):
            return {}
        return {"spectral_reg": self.hparams.spectral_lambda * self.spectral_regulariser()}

    def configure_optimizers(self):
        hp = self.hparams
        groups = {"delta": [], "query": [], "lora": [], "temporal": []}
        for n, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if n.endswith(".delta"):
                groups["delta"].append(p)
            elif ".temporal." in n:
                groups["temporal"].append(p)
            elif "lora_" in n:
                groups["lora"].append(p)
            else:
                groups["query"].append(p)
        lrs = {"delta": hp.lr_delta, "query": hp.lr_query, "lora": hp.lr_lora, "temporal": hp.lr_temporal}
        param_groups = [{"params": ps, "lr": lrs[k], "name": k} for k, ps in groups.items() if ps]
        return torch.optim.AdamW(param_groups, weight_decay=hp.weight_decay)

    # -- export ----------------------------------------------------------------------------------
    def export_formats(self) -> list[str]:
        """SAVE's own files; the LoRA baseline also as diffusers LoRA (`load_lora_weights`; the
        temporal attention is not part of it: the diffusers pipeline runs per frame)."""
        return ["vidtune"] + (["diffusers-lora"] if self.hparams.adapter == "lora" else [])

    def export(self, out_dir: str | Path, step: int | None = None) -> Path:
        """Write the export folder (replaced as a unit); `step` defaults to the trainer's global step."""
        hp = dict(self.hparams)
        hp.pop("edit", None)
        if step is None and self._trainer is not None:
            step = self.global_step
        return save_export(
            out_dir, self.video_unet, method=self.method, adapter=self.hparams.adapter,
            temporal_trained=self.hparams.temporal != "frozen", base_model=self.spec.model_id,
            checksum=self.base_checksum, fingerprint=self.base_fingerprint, hyperparameters=hp,
            text_encoder=self.spec.text_encoders[0] if self.hparams.train_text_encoder else None, step=step,
        )

    def spectral_summary(self) -> dict[str, dict[str, torch.Tensor]]:
        """Per query layer: σ, δ, σ' = ReLU(σ+δ) (for the plots)."""
        out = {}
        for n, m in spectral_layers(self.video_unet.unet).items():
            if isinstance(m, SpectralShiftLinear) and n.endswith("to_q"):
                out[n] = {"sigma": m.S.detach().cpu(), "delta": m.delta.detach().cpu(),
                          "shifted": torch.relu(m.S + m.delta).detach().cpu()}
        return out
