"""Shared machinery of the one-clip video-tuning LightningModules (SAVE, Tune-A-Video, and later
SMA's hosts): cached latents/text embeddings, seeded per-step noise, trainable-only checkpoints,
NaN guard, editing in validation/predict, export."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from modules.editing import EditConfig, EditResult, edit_clip
from modules.models.loading import DiffusionParts, encode_prompts
from modules.sampling import LatentCodec, SamplingCallback


class NonFiniteLossError(RuntimeError):
    pass


class VideoTuningModule(L.LightningModule):
    """Subclasses build `self.parts` (DiffusionParts) and `self.video_unet` and define `extra_loss`,
    `configure_optimizers`, `export`."""

    parts: DiffusionParts

    def __init__(self, seed: int = 0, edit: EditConfig | None = None):
        super().__init__()
        self.noise_seed = seed
        self.edit_cfg = edit or EditConfig()
        self.sampling_callbacks: list[SamplingCallback] = []  # zero-shot callbacks register here
        self._latents: dict[int, torch.Tensor] = {}
        self._embeddings: dict[str, torch.Tensor] = {}
        self.strict_loading = False  # checkpoints hold trainable tensors only
        self.last_edit: EditResult | None = None

    # -- frozen parts, cached once per run -----------------------------------------------------
    @property
    def codec(self) -> LatentCodec:
        return LatentCodec(self.parts.vae)

    def latents(self, batch) -> torch.Tensor:
        out = []
        for i, idx in enumerate(batch["index"].tolist()):
            if idx not in self._latents:
                px = batch["pixel_values"][i: i + 1].to(self.device, self.video_unet.dtype)
                self._latents[idx] = self.codec.encode(px)
            out.append(self._latents[idx])
        return torch.cat(out)

    def train_text_encoder(self) -> bool:
        return False

    def text_embeddings(self, prompts: list[str]) -> torch.Tensor:
        if self.train_text_encoder():
            return encode_prompts(self.parts, prompts, grad=True)
        missing = [p for p in prompts if p not in self._embeddings]
        if missing:
            for p, e in zip(missing, encode_prompts(self.parts, missing)):
                self._embeddings[p] = e
        return torch.stack([self._embeddings[p] for p in prompts])

    # -- training ------------------------------------------------------------------------------
    def step_generator(self) -> torch.Generator:
        """Noise and timesteps depend only on (seed, step, rank): resuming continues exactly."""
        g = torch.Generator(device="cpu")
        g.manual_seed(self.noise_seed * 1_000_003 + self.global_step * 101 + self.global_rank)
        return g

    def diffusion_loss(self, z0: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, dict]:
        sch = self.parts.scheduler
        g = self.step_generator()
        noise = torch.randn(z0.shape, generator=g).to(z0)
        t = torch.randint(0, sch.config.num_train_timesteps, (z0.shape[0],), generator=g).to(z0.device)
        zt = sch.add_noise(z0, noise, t)
        target = noise if sch.config.prediction_type == "epsilon" else sch.get_velocity(z0, noise, t)
        pred = self.video_unet(zt, t, emb.to(zt.dtype))
        return F.mse_loss(pred.float(), target.float()), {"noise": noise, "t": t, "zt": zt, "pred": pred}

    def extra_loss(self) -> dict[str, torch.Tensor]:
        return {}

    def training_step(self, batch, batch_idx):
        z0 = self.latents(batch)
        emb = self.text_embeddings(list(batch["prompt"]))
        diff, _ = self.diffusion_loss(z0, emb)
        terms = {"diffusion_loss": diff, **self.extra_loss()}
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            ckpt_dir = Path(self.trainer.default_root_dir) / "checkpoints"
            raise NonFiniteLossError(
                f"loss became {loss.item()} at step {self.global_step} "
                f"({', '.join(f'{k}={v.item():.4g}' for k, v in terms.items())}); training stopped. "
                f"The last good checkpoint is in {ckpt_dir} (resume with --ckpt_path {ckpt_dir}/last.ckpt "
                "and a lower learning rate)."
            )
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, on_step=True, prog_bar=False)
        self.log("train/loss", loss.detach(), on_step=True, prog_bar=True)
        return loss

    # -- checkpoints: trainable tensors only ---------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = self.trainable_state()
        checkpoint["module_class"] = f"{type(self).__module__}.{type(self).__qualname__}"
        checkpoint["base_checksum"] = getattr(self, "base_checksum", None)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        theirs, ours = checkpoint.get("base_checksum"), getattr(self, "base_checksum", None)
        if theirs and ours and theirs != ours:
            raise ValueError(
                f"this checkpoint was trained on a base model with query checksum {theirs}, but "
                f"model.init_args.model loads one with checksum {ours}; point `model` at the base it was trained on."
            )
        own = {n for n, p in self.named_parameters() if p.requires_grad}
        got = set(checkpoint["state_dict"])
        if got != own:
            raise ValueError(
                f"checkpoint trainable tensors do not match this model: {len(got - own)} unexpected "
                f"(e.g. {sorted(got - own)[:2]}), {len(own - got)} missing (e.g. {sorted(own - got)[:2]}). "
                "Was it trained with another adapter/temporal setting or base model?"
            )

    # -- editing -------------------------------------------------------------------------------
    def edit_batch(self, batch, prompts: list[str] | None = None) -> EditResult:
        cfg = self.edit_cfg
        if prompts is not None:
            cfg = EditConfig(**{**cfg.__dict__, "edit_prompts": prompts})
        px = batch["pixel_values"][:1].to(self.device)
        was_training = self.video_unet.training
        self.video_unet.eval()
        try:
            res = edit_clip(self.parts, self.video_unet, px, batch["prompt"][0], cfg, self.sampling_callbacks,
                            progress=True)
        finally:
            self.video_unet.train(was_training)
        self.last_edit = res
        return res

    def edit_prompts_for(self, batch) -> list[str]:
        if self.edit_cfg.edit_prompts:
            return list(self.edit_cfg.edit_prompts)
        dm = getattr(self.trainer, "datamodule", None)
        return list(getattr(dm, "edit_prompts", None) or [])

    def validation_step(self, batch, batch_idx):
        from modules.callbacks.video_logger import log_edit

        res = self.edit_batch(batch, self.edit_prompts_for(batch))
        metrics = log_edit(self, res, batch["prompt"][0], tag=f"step{self.global_step:06d}")
        if metrics:
            self.log_dict(metrics, batch_size=1)

    def predict_step(self, batch, batch_idx):
        from modules.callbacks.video_logger import log_edit

        res = self.edit_batch(batch, self.edit_prompts_for(batch))
        log_edit(self, res, batch["prompt"][0], tag="predict")
        return res
