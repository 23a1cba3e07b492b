"""`sd`: Stable Diffusion 1.x / 2.x (and pixel-space models of the same layout, e.g. the tiny world,
which have no `vae/`). The 2D UNet runs per frame through `VideoUNet` (frames folded into the
batch); `inflate()` turns on cross-frame attention and temporal layers (Tune-A-Video, SAVE)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel

from modules.conditioning import Conditioning
from modules.models.spec import ModelSpec, load_scheduler, load_tokenizer, model_index, register_family
from modules.models.video_unet import FrameAttnProcessor, TemporalAttention, VideoUNet


class InflatableUNetSpec(ModelSpec):
    """Families whose denoiser is a 2D `UNet2DConditionModel` run per frame via `VideoUNet`."""

    unet: UNet2DConditionModel

    @property
    def model(self) -> VideoUNet:
        """The video denoiser; by default the image model per frame (`per_frame`, no temporal layers).
        Built on first use, so code that wraps `spec.unet` itself is not disturbed."""
        if self._model is None:
            if any(isinstance(a.processor, FrameAttnProcessor) for a in _self_attentions(self.unet)):
                raise ValueError(
                    f"{self.model_id}: spec.unet is already wrapped by a VideoUNet built outside the spec; building "
                    "the default one would replace its frame attention. Use spec.inflate(...) instead of "
                    "VideoUNet(spec.unet, ...), or hand it over with spec.model = video_unet."
                )
            self._model = VideoUNet(self.unet, "per_frame", temporal=False).eval()
        return self._model

    @model.setter
    def model(self, video_unet: VideoUNet) -> None:
        """Adopt a `VideoUNet` built around this spec's UNet (e.g. by a method's own inflation)."""
        if not (isinstance(video_unet, VideoUNet) and video_unet.unet is self.unet):
            raise ValueError("spec.model must be a VideoUNet wrapping this spec's own unet (spec.unet)")
        self._model = video_unet

    @property
    def network(self) -> UNet2DConditionModel:
        return self.unet

    def inflate(self, frame_attention: str = "first", temporal: bool = True) -> VideoUNet:
        """Replace `spec.model` by a `VideoUNet` with `frame_attention` and (optionally) temporal
        attention layers (zero-initialised: the output is unchanged until they are trained; their
        parameters require grad, the base stays frozen; eval mode until a trainer says otherwise)."""
        if any(isinstance(m, TemporalAttention) for m in self.unet.modules()):
            raise ValueError(
                f"{self.model_id}: the UNet already has temporal layers (inflate() was called before); "
                "change the frame attention with spec.model.set_frame_attention(mode) instead."
            )
        self._model = VideoUNet(self.unet, frame_attention, temporal=temporal).eval()
        return self._model


def _self_attentions(unet):
    from diffusers.models.attention import BasicTransformerBlock

    return [m.attn1 for m in unet.modules() if isinstance(m, BasicTransformerBlock)]


def encode_clip_prompt(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    """One CLIP's last hidden state `(B, L, D)`: diffusers' `StableDiffusionPipeline.encode_prompt`
    (0.42; `TextToVideoSDPipeline` copies it) called with this spec's parts."""
    ns = SimpleNamespace(tokenizer=tokenizer, text_encoder=text_encoder, unet=None)
    device = next(text_encoder.parameters()).device
    emb, _ = StableDiffusionPipeline.encode_prompt(ns, prompts, device, 1, False)
    return emb


@register_family
class SDSpec(InflatableUNetSpec):
    family = "sd"
    pipelines = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline")
    parts = ("unet", "text_encoder", "tokenizer", "scheduler")
    download_hint = (
        "Download a diffusers-format Stable Diffusion 1.x/2.x folder, e.g.\n"
        "  huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir {path}\n"
        "(it must contain unet/, vae/, text_encoder/, tokenizer/, scheduler/; a pixel-space model has no vae/)."
    )

    def __init__(self, *, unet: UNet2DConditionModel, **kw):
        self.unet = unet
        super().__init__(model=None, **kw)

    @classmethod
    def required_parts(cls, path: Path) -> tuple[str, ...]:
        vae = model_index(path).get("vae", [None, None])
        listed = isinstance(vae, list) and vae and vae[0] is not None
        return cls.parts + (("vae",) if listed else ())

    @classmethod
    def _load(cls, path: Path, dtype: torch.dtype) -> "SDSpec":
        vae = AutoencoderKL.from_pretrained(path / "vae", torch_dtype=dtype) if (path / "vae").is_dir() else None
        return cls(
            path=path, model_id=cls.model_id_of(path), dtype=dtype, scheduler=load_scheduler(path / "scheduler"),
            unet=UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=dtype), vae=vae,
            text_encoders=[CLIPTextModel.from_pretrained(path / "text_encoder", torch_dtype=dtype)],
            tokenizers=[load_tokenizer(path / "tokenizer")],
        )

    # the parts by their diffusers names (one text encoder)
    @property
    def text_encoder(self) -> CLIPTextModel:
        return self.text_encoders[0]

    @property
    def tokenizer(self):
        return self.tokenizers[0]

    def _encode_prompt(self, prompts, size):
        return {"encoder_hidden_states": encode_clip_prompt(self.tokenizer, self.text_encoder, prompts)}

    def _denoise(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self.model(x, t, cond["encoder_hidden_states"])
