"""`cogvideox`: CogVideoX (`CogVideoXTransformer3DModel`, `AutoencoderKLCogVideoX`, T5,
`CogVideoXDDIMScheduler`: v-prediction, trailing, zero terminal SNR with `snr_shift_scale`).

- The causal 3-D VAE maps F frames to (F-1)/4+1 latent frames and round-trips only 8k+1 frame
  counts (in diffusers 0.42: 9 -> 9, 17 -> 17, but 13 -> 16): other counts are refused.
- The transformer takes `(B, F, C, H, W)` and 3-D rotary embeddings sized from the latent grid
  (head dim a multiple of 16); both are handled inside the denoiser, which keeps the canonical
  `(B, C, F, h, w)` layout outside.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from types import SimpleNamespace

import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXPipeline, CogVideoXTransformer3DModel
from transformers import T5EncoderModel

from modules.conditioning import Conditioning
from modules.models.spec import (
    ModelFamilyError,
    ModelSpec,
    VideoSizeError,
    load_scheduler,
    load_tokenizer,
    nearest_multiples,
    register_family,
)

FRAME_RULE = 8  # the VAE encodes frames in batches of 8 after the first: valid counts are 8k+1


@register_family
class CogVideoXSpec(ModelSpec):
    family = "cogvideox"
    pipelines = ("CogVideoXPipeline", "CogVideoXVideoToVideoPipeline", "CogVideoXImageToVideoPipeline")
    parts = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
    download_hint = (
        "Download a diffusers-format CogVideoX folder, e.g.\n"
        "  huggingface-cli download THUDM/CogVideoX-5b --local-dir {path}\n"
        "(it must contain transformer/, vae/, text_encoder/, tokenizer/, scheduler/)."
    )

    def __init__(self, **kw):
        super().__init__(**kw)
        self._rotary: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def _load(cls, path: Path, dtype: torch.dtype) -> "CogVideoXSpec":
        scheduler = load_scheduler(path / "scheduler")
        cls._check_scheduler(path, scheduler)
        return cls(
            path=path, model_id=cls.model_id_of(path), dtype=dtype, scheduler=scheduler,
            model=CogVideoXTransformer3DModel.from_pretrained(path / "transformer", torch_dtype=dtype),
            vae=AutoencoderKLCogVideoX.from_pretrained(path / "vae", torch_dtype=dtype),
            text_encoders=[T5EncoderModel.from_pretrained(path / "text_encoder", torch_dtype=dtype)],
            tokenizers=[load_tokenizer(path / "tokenizer")],
        )

    @staticmethod
    def _check_scheduler(path: Path, scheduler) -> None:
        """The schedule's `snr_shift_scale` must survive loading (a `DDIMScheduler` drops it silently)."""
        file = path / "scheduler" / "scheduler_config.json"
        saved = json.loads(file.read_text())
        takes = inspect.signature(type(scheduler).__init__).parameters
        if "snr_shift_scale" in saved and "snr_shift_scale" not in takes:  # diffusers keeps the key, unused
            raise ModelFamilyError(
                f"{file}: _class_name {saved.get('_class_name')!r} ignores snr_shift_scale="
                f"{saved['snr_shift_scale']}, so the noise schedule would differ from the one CogVideoX was "
                "trained with; set _class_name to CogVideoXDDIMScheduler (or CogVideoXDPMScheduler)."
            )

    @property
    def transformer(self) -> CogVideoXTransformer3DModel:
        return self._model

    # -- prompts -------------------------------------------------------------------------------
    def _encode_prompt(self, prompts, size):
        te = self.text_encoders[0]
        ns = SimpleNamespace(tokenizer=self.tokenizers[0], text_encoder=te)
        emb = CogVideoXPipeline._get_t5_prompt_embeds(
            ns, prompts, num_videos_per_prompt=1, max_sequence_length=self.transformer.config.max_text_seq_length,
            device=next(te.parameters()).device, dtype=te.dtype,
        )
        return {"encoder_hidden_states": emb}

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def temporal_compression(self) -> int:
        return int(self.vae.config.temporal_compression_ratio)

    def latent_frames(self, num_frames: int) -> int:
        return (num_frames - 1) // self.temporal_compression + 1

    def spatial_multiple(self) -> tuple[int, str]:
        p = self.transformer.config.patch_size
        return self.vae_scale_factor * p, f"VAE factor {self.vae_scale_factor} × patch size {p}"

    def check_video_size(self, num_frames: int, height: int, width: int, where: str = "") -> None:
        super().check_video_size(num_frames, height, width, where)
        cfg = self.transformer.config
        if cfg.use_learned_positional_embeddings:
            s = self.vae_scale_factor
            native = (cfg.sample_height * s, cfg.sample_width * s)
            if (height, width) != native:
                raise VideoSizeError(
                    f"{where + ': ' if where else ''}{height}×{width}: this CogVideoX transformer has learned "
                    f"positional embeddings (transformer/config.json use_learned_positional_embeddings) and takes "
                    f"only {native[0]}×{native[1]}; resize the clip to that."
                )

    def _check_frames(self, num_frames: int, prefix: str) -> None:
        if (num_frames - 1) % FRAME_RULE:
            lo = (num_frames - 1) // FRAME_RULE * FRAME_RULE + 1
            near = " or ".join(str(v) for v in (lo, lo + FRAME_RULE) if v >= 1)
            back = self._decoded_frames(num_frames)
            raise VideoSizeError(
                f"{prefix}{num_frames} frames: CogVideoX's causal 3-D VAE round-trips only 8k+1 frame counts "
                f"({num_frames} would come back as {back}); trim or pad the clip to {near} frames."
            )
        p_t = self.transformer.config.patch_size_t
        if p_t and self.latent_frames(num_frames) % p_t:
            raise VideoSizeError(
                f"{prefix}{num_frames} frames give {self.latent_frames(num_frames)} latent frames, not a multiple of "
                f"the transformer's temporal patch size {p_t} (CogVideoX 1.5); this family supports CogVideoX 1.0 "
                "layouts (patch_size_t null) for editing."
            )

    def _decoded_frames(self, num_frames: int) -> int:
        """What the VAE gives back for `num_frames` input frames (latent batches of 2 -> 8 frames, the
        first batch one frame fewer)."""
        lat = self.latent_frames(num_frames)
        return (lat - 1) * self.temporal_compression + 1 if lat % 2 else lat * self.temporal_compression

    def token_grid(self, latent_shape) -> tuple[int, int, int]:
        f, h, w = tuple(latent_shape)[-3:]
        p, p_t = self.transformer.config.patch_size, self.transformer.config.patch_size_t
        return (f // p_t if p_t else f), h // p, w // p

    # -- codec ---------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """`(B, 3, F, H, W)` -> `(B, C, (F-1)/4+1, H/s, W/s)`: posterior mean × scaling factor, one clip at a time."""
        b, c, f, h, w = pixels.shape
        self.check_video_size(f, h, w, where="encode(pixels)")
        x = pixels.to(next(self.vae.parameters()).device, self.vae.dtype)
        z = torch.cat([self.vae.encode(x[i:i + 1]).latent_dist.mean for i in range(b)])
        return self._scale_latents(z)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = self._unscale_latents(latents.to(self.vae.dtype))
        return torch.cat([self.vae.decode(z[i:i + 1]).sample for i in range(z.shape[0])]).clamp(-1, 1)

    # -- denoiser ------------------------------------------------------------------------------
    def rotary_embeddings(self, num_frames: int, h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(cos, sin) for a latent grid of `num_frames`×`h`×`w`: diffusers' own
        `CogVideoXPipeline._prepare_rotary_positional_embeddings` (0.42), cached per grid."""
        if not self.transformer.config.use_rotary_positional_embeddings:
            return None
        key = (num_frames, h, w, str(device))
        if key not in self._rotary:
            s = self.vae_scale_factor
            ns = SimpleNamespace(vae_scale_factor_spatial=s, transformer=self.transformer)
            self._rotary[key] = CogVideoXPipeline._prepare_rotary_positional_embeddings(
                ns, height=h * s, width=w * s, num_frames=num_frames, device=device
            )
        return self._rotary[key]

    def _denoise(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        b, c, f, h, w = x.shape
        cfg = self.transformer.config
        p = cfg.patch_size
        if h % p or w % p or (cfg.patch_size_t and f % cfg.patch_size_t):
            raise VideoSizeError(
                f"latent grid {f}×{h}×{w} is not divisible by the transformer's patch size "
                f"({cfg.patch_size_t or 1}×{p}×{p}); use spec.check_video_size on the clip first."
            )
        ofs = None if cfg.ofs_embed_dim is None else x.new_full((1,), 2.0)
        out = self.transformer(
            hidden_states=x.permute(0, 2, 1, 3, 4), encoder_hidden_states=cond["encoder_hidden_states"], timestep=t,
            ofs=ofs, image_rotary_emb=self.rotary_embeddings(f, h, w, x.device), return_dict=False,
        )[0]
        return out.permute(0, 2, 1, 3, 4)
