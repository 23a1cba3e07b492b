"""Zero-shot editing as a LightningModule: no trainable parameters, any model family, `predict`
runs the shared loop with the zero-shot callbacks of the recipe (STEM inversion today; FADE and
Warped later). Files and W&B logging are done by a Lightning callback (`EditVideoWriter`), not
here: `predict_step` returns the `EditResult`.

    python -m train predict -c configs/stem/tiny.yaml
"""
from __future__ import annotations

from typing import Literal

import lightning as L
import torch

from modules.editing import EditConfig, EditResult, edit_clip
from modules.models.spec import load_model
from modules.models.video_unet import FRAME_ATTENTION_MODES, FrameAttention
from modules.sampling import SamplingCallback


class ZeroShotModule(L.LightningModule):
    def __init__(
        self,
        model: str = "tiny-world",
        family: Literal["sd", "sdxl", "unet3d", "cogvideox"] | None = None,
        frame_attention: FrameAttention = "per_frame",
        base_dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        edit: EditConfig | None = None,
    ):
        """
        Args:
            model: local diffusers folder or preset (`tiny-world`, `tiny-sd`, `tiny-sdxl`,
                `tiny-unet3d`, `tiny-cogvideox`).
            family: assert the model family (None: detected from the folder).
            frame_attention: for image families run per frame (`per_frame`) or with cross-frame
                attention (`first`, `sparse_causal`, `full`); ignored by native video families.
            base_dtype: dtype of the frozen model (`bfloat16` on GPUs).
            edit: inversion / edit settings (prompts, steps, CFG).
        """
        super().__init__()
        if frame_attention not in FRAME_ATTENTION_MODES:
            raise ValueError(f"model.frame_attention must be one of {FRAME_ATTENTION_MODES}, got {frame_attention!r}")
        self.save_hyperparameters()
        self.edit_cfg = edit or EditConfig()
        self.spec = load_model(model, dtype=getattr(torch, base_dtype), family=family)
        if frame_attention != "per_frame" and hasattr(self.spec, "inflate"):
            self.spec.inflate(frame_attention, temporal=False)
        for name, module in self.spec.modules().items():
            self.add_module(f"frozen_{name}", module)  # moves with the LightningModule
        self.sampling_callbacks: list[SamplingCallback] = []  # zero-shot callbacks register here

    def configure_callbacks(self):
        from modules.callbacks.edit_writer import EditVideoWriter

        return [EditVideoWriter()]

    def edit_prompts_for(self) -> list[str]:
        if self.edit_cfg.edit_prompts:
            return list(self.edit_cfg.edit_prompts)
        dm = getattr(self.trainer, "datamodule", None)
        return list(getattr(dm, "edit_prompts", None) or [])

    def predict_step(self, batch, batch_idx) -> EditResult:
        cfg = EditConfig(**{**self.edit_cfg.__dict__, "edit_prompts": self.edit_prompts_for()})
        px = batch["pixel_values"][:1].to(self.device)
        res = edit_clip(self.spec, px, batch["prompt"][0], cfg, self.sampling_callbacks, progress=True)
        return res

    def configure_optimizers(self):
        return None
