"""`sdxl`: Stable Diffusion XL. Two CLIP text encoders (penultimate hidden states concatenated; the
pooled projection of the second is `text_embeds`), `time_ids` = (original size, crop top-left
(0, 0), target size) = the video's (H, W) in pixels. The 2D UNet runs per frame (`VideoUNet`,
added conditions repeated per frame) and can be inflated like `sd`."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from modules.conditioning import Conditioning
from modules.models.families.sd import InflatableUNetSpec
from modules.models.spec import load_scheduler, load_tokenizer, model_index, register_family


@register_family
class SDXLSpec(InflatableUNetSpec):
    family = "sdxl"
    pipelines = ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline")
    parts = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
    cond_keys = ("encoder_hidden_states", "text_embeds", "time_ids")
    download_hint = (
        "Download a diffusers-format SDXL folder, e.g.\n"
        "  huggingface-cli download stabilityai/stable-diffusion-xl-base-1.0 --local-dir {path} "
        "--include '*.json' '*.txt' '*/diffusion_pytorch_model.safetensors' '*/model.safetensors'\n"
        "(it must contain unet/, vae/, text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/)."
    )

    def __init__(self, *, unet: UNet2DConditionModel, force_zeros_for_empty_prompt: bool = True, **kw):
        self.unet = unet
        self.force_zeros_for_empty_prompt = force_zeros_for_empty_prompt
        super().__init__(model=None, **kw)

    @classmethod
    def _load(cls, path: Path, dtype: torch.dtype) -> "SDXLSpec":
        return cls(
            path=path, model_id=cls.model_id_of(path), dtype=dtype, scheduler=load_scheduler(path / "scheduler"),
            unet=UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=dtype),
            vae=AutoencoderKL.from_pretrained(path / "vae", torch_dtype=dtype),
            text_encoders=[CLIPTextModel.from_pretrained(path / "text_encoder", torch_dtype=dtype),
                           CLIPTextModelWithProjection.from_pretrained(path / "text_encoder_2", torch_dtype=dtype)],
            tokenizers=[load_tokenizer(path / "tokenizer"),
                        load_tokenizer(path / "tokenizer_2")],
            force_zeros_for_empty_prompt=model_index(path).get("force_zeros_for_empty_prompt", True),
        )

    @property
    def default_size(self) -> tuple[int, int]:
        """The pipeline's default resolution: the UNet's sample size × the VAE factor."""
        s = self.unet.config.sample_size * self.vae_scale_factor
        return s, s

    def _pipeline_view(self) -> SimpleNamespace:
        """The attributes diffusers' SDXL pipeline helpers read (0.42), without building a pipeline."""
        return SimpleNamespace(
            tokenizer=self.tokenizers[0], tokenizer_2=self.tokenizers[1], text_encoder=self.text_encoders[0],
            text_encoder_2=self.text_encoders[1], unet=self.unet,
            config=SimpleNamespace(force_zeros_for_empty_prompt=self.force_zeros_for_empty_prompt),
        )

    def time_ids(self, height: int, width: int, batch: int = 1, original_size: tuple[int, int] | None = None,
                 crop_top_left: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """`(batch, 6)`: (original H, W, crop top, left, target H, W) — the pipeline's
        `_get_add_time_ids`; by default original = target = the video's size and crop (0, 0)
        (training on crops passes each item's own)."""
        proj = self.text_encoders[1].config.projection_dim
        ids = StableDiffusionXLPipeline._get_add_time_ids(
            self._pipeline_view(), tuple(original_size or (height, width)), tuple(crop_top_left), (height, width),
            torch.float32, text_encoder_projection_dim=proj
        )
        return ids.to(_device(self.text_encoders[1])).expand(batch, -1)

    def _encode_prompt(self, prompts, size):
        device = _device(self.text_encoders[1])
        emb, _, pooled, _ = StableDiffusionXLPipeline.encode_prompt(
            self._pipeline_view(), prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        h, w = size or self.default_size
        return {"encoder_hidden_states": emb, "text_embeds": pooled,
                "time_ids": self.time_ids(h, w, len(prompts)).to(pooled.dtype)}

    def unconditional(self, size: tuple[int, int] | None = None) -> Conditioning:
        cond = self.encode_prompt([""], size=size)
        if not self.force_zeros_for_empty_prompt:
            return cond
        return cond.with_(encoder_hidden_states=torch.zeros_like(cond["encoder_hidden_states"]),
                          text_embeds=torch.zeros_like(cond["text_embeds"]))

    def _denoise(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        added = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}
        return self.model(x, t, cond["encoder_hidden_states"], added_cond_kwargs=added)


def _device(module) -> torch.device:
    return next(module.parameters()).device
