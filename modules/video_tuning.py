"""One-clip video tuning (SAVE, Tune-A-Video, and later SMA's hosts) on the training base:
latents of each clip encoded once per run, prompt conditioning from the family spec's cache,
editing in validation/predict. The results are returned; `EditVideoWriter` (a Lightning
callback) writes the videos, metrics and W&B media."""
from __future__ import annotations

import torch

from modules.editing import EditConfig, EditResult, edit_clip
from modules.sampling import SamplingCallback
from modules.training import TrainingModule


class VideoTuningModule(TrainingModule):
    """Subclasses load `self.spec`, register its video denoiser as `self.video_unet` (= `spec.model`;
    checkpoint keys start with `video_unet.`), mark trainable tensors, and define
    `configure_optimizers` and `export`; they may add `extra_loss(batch, aux)`."""

    def __init__(self, seed: int = 0, edit: EditConfig | None = None, noise: str = "white",
                 grad_clip: float | None = None):
        super().__init__(seed=seed, noise=noise, grad_clip=grad_clip)
        self.edit_cfg = edit or EditConfig()
        self.sampling_callbacks: list[SamplingCallback] = []  # zero-shot callbacks register here
        self._latents: dict[int, torch.Tensor] = {}  # one entry per clip (one-clip tuning: bounded)
        self.last_edit: EditResult | None = None

    # -- frozen parts, cached once per run -----------------------------------------------------
    def latents(self, batch) -> torch.Tensor:
        out = []
        for i, idx in enumerate(batch["index"].tolist()):
            if idx not in self._latents:
                px = batch["pixel_values"][i: i + 1].to(self.device, self.spec.model_dtype)
                self._latents[idx] = self.spec.encode(px)
            out.append(self._latents[idx])
        return torch.cat(out)

    def train_text_encoder(self) -> bool:
        return False

    def conditioning(self, prompts: list[str], size: tuple[int, int] | None):
        return self.spec.encode_prompt(list(prompts), grad=self.train_text_encoder(), size=size).to(self.device)

    # -- training ------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        z0 = self.latents(batch)
        size = tuple(batch["pixel_values"].shape[-2:]) if "pixel_values" in batch else None
        cond = self.conditioning(batch["prompt"], size)
        diff, aux = self.diffusion_loss(z0, cond)
        terms = {"diffusion_loss": diff, **self.extra_loss(batch, aux)}
        loss = sum(terms.values())
        self.check_finite(loss, terms)
        self.log_terms(loss, terms, batch_size=z0.shape[0])
        return loss

    def configure_callbacks(self):
        from modules.callbacks.edit_writer import EditVideoWriter

        return [EditVideoWriter()]

    # -- editing -------------------------------------------------------------------------------
    def edit_batch(self, batch, prompts: list[str] | None = None) -> EditResult:
        cfg = self.edit_cfg
        if prompts is not None:
            cfg = EditConfig(**{**cfg.__dict__, "edit_prompts": prompts})
        px = batch["pixel_values"][:1].to(self.device)
        was_training = self.video_unet.training
        self.video_unet.eval()
        try:
            with self.inference_adapters():
                res = edit_clip(self.spec, px, batch["prompt"][0], cfg, self.sampling_callbacks, progress=True)
        finally:
            self.video_unet.train(was_training)
        self.last_edit = res
        return res

    def edit_prompts_for(self, batch) -> list[str]:
        if self.edit_cfg.edit_prompts:
            return list(self.edit_cfg.edit_prompts)
        dm = getattr(self.trainer, "datamodule", None)
        return list(getattr(dm, "edit_prompts", None) or [])

    def validation_step(self, batch, batch_idx) -> EditResult:
        return self.edit_batch(batch, self.edit_prompts_for(batch))

    def predict_step(self, batch, batch_idx) -> EditResult:
        return self.edit_batch(batch, self.edit_prompts_for(batch))
