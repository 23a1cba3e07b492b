"""`unet3d`: diffusers' `UNet3DConditionModel` text-to-video UNets (ModelScope text-to-video-ms-1.7b,
Zeroscope v2; `TextToVideoSDPipeline`): one CLIP, a per-frame KL VAE, latents natively
`(B, C, F, h, w)`. Pixel-space models of the same layout (the tiny video world, `assets/video_world`)
have no `vae/` and `"vae": [null, null]` in `model_index.json`: the codec is the identity.

Frame position: `UNet3DConditionModel` has no positional embedding in its temporal attention
(permutation-equivariant across frames; only the zero padding of the temporal convolutions marks the
first and last frames), so from noise that is alike in every frame a model cannot tell which frame
it draws. A model saved with `"frame_position": true` in `model_index.json` takes one more input
channel, a constant plane per frame holding the frame's place in the clip (`frame_position_code`:
-1 at the first frame, +1 at the last); the family's denoiser appends it, so training, sampling,
inversion and tuning all see it without knowing. The UNet itself stays stock diffusers
(`in_channels` = latent channels + 1)."""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL
from transformers import CLIPTextModel

from modules.conditioning import Conditioning
from modules.models.families.sd import encode_clip_prompt
from modules.models.spec import ModelSpec, load_scheduler, load_tokenizer, model_index, register_family
from modules.models.unet3d_model import UNet3DConditionModel  # + peft adapter mixin, gradient checkpointing


def frame_position_code(z: torch.Tensor) -> torch.Tensor:
    """`(B, 1, F, h, w)`: every frame's place in the clip, linearly from -1 (first) to +1 (last); 0
    for a single frame. Dtype and device of `z`."""
    b, _, f, h, w = z.shape
    pos = torch.linspace(-1, 1, f, device=z.device, dtype=z.dtype) if f > 1 else z.new_zeros(1)
    return pos.view(1, 1, f, 1, 1).expand(b, 1, f, h, w)


@register_family
class UNet3DSpec(ModelSpec):
    family = "unet3d"
    pipelines = ("TextToVideoSDPipeline", "VideoToVideoSDPipeline")
    parts = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
    download_hint = (
        "Download a diffusers-format text-to-video UNet3D folder, e.g.\n"
        "  huggingface-cli download cerspense/zeroscope_v2_576w --local-dir {path}\n"
        "or ali-vilab/text-to-video-ms-1.7b (it must contain unet/, vae/, text_encoder/, tokenizer/, scheduler/; "
        "a pixel-space model has no vae/)."
    )

    @classmethod
    def required_parts(cls, path: Path) -> tuple[str, ...]:
        """`vae/` is required unless `model_index.json` lists no VAE (`"vae": [null, null]`: pixel space)."""
        vae = model_index(path).get("vae", ["diffusers", "AutoencoderKL"])
        pixel_space = isinstance(vae, list) and len(vae) == 2 and vae[0] is None
        return tuple(p for p in cls.parts if not (pixel_space and p == "vae"))

    def __init__(self, *, frame_position: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.frame_position = bool(frame_position)

    @classmethod
    def _load(cls, path: Path, dtype: torch.dtype) -> "UNet3DSpec":
        return cls(
            frame_position=bool(model_index(path).get("frame_position", False)),
            path=path, model_id=cls.model_id_of(path), dtype=dtype, scheduler=load_scheduler(path / "scheduler"),
            model=UNet3DConditionModel.from_pretrained(path / "unet", torch_dtype=dtype),
            vae=AutoencoderKL.from_pretrained(path / "vae", torch_dtype=dtype) if "vae" in cls.required_parts(path) else None,
            text_encoders=[CLIPTextModel.from_pretrained(path / "text_encoder", torch_dtype=dtype)],
            tokenizers=[load_tokenizer(path / "tokenizer")],
        )

    @property
    def unet(self) -> UNet3DConditionModel:
        return self._model

    def _encode_prompt(self, prompts, size):
        return {"encoder_hidden_states": encode_clip_prompt(self.tokenizers[0], self.text_encoders[0], prompts)}

    def _model_input(self, z: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        if self.frame_position:
            z = torch.cat([z, frame_position_code(z)], dim=1)
        return super()._model_input(z, cond)

    def _denoise(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self.unet(x, t, encoder_hidden_states=cond["encoder_hidden_states"]).sample
