"""The tiny video world: a pixel-space text-to-video `UNet3DConditionModel` trained on CPU.

The video counterpart of `modules/world.py`. The network is diffusers' `UNet3DConditionModel`
(the `unet3d` family: ModelScope / Zeroscope's architecture) at 32×32×3 with no VAE; its spatial
layers start from the trained image world (`assets/world`, every tensor whose name and shape
match — the attention projections are 1×1 convolutions there and linear layers here, the same
map), and its temporal layers start as the identity (diffusers zero-initialises the temporal
convolutions' last layer; `zero_temporal_outputs` does the same for the temporal transformers'
output projections), so step 0 is the image world run frame by frame — as ModelScope started from
Stable Diffusion. The text side is the image world's frozen random CLIP and word tokenizer with the
motion words appended (`extend_text_encoder`: the existing token ids and embeddings are kept; CLIP's
causal attention leaves the caption's photo words encoded as before).

Data: `data.motion_clips.MotionClipDataModule` (pans, zooms and still cameras over the eight
photographs, captions naming both). Training: `VideoWorldModule` on the training base
(`modules.training.TrainingModule`: iteration-keyed noise streams, ε-MSE through the family spec,
NaN guard, trainable-only checkpoints, gradient clipping), AdamW with separate learning rates for
the temporal and the spatial layers (the spatial group can wait `spatial_start_step` steps: the
temporal layers learn first), warmup + cosine that also follows wall time, EMA of the UNet (saved).
`on_train_end` writes the diffusers folder (`save_video_world`), loaded as the preset
`tiny-video-world`. Recipes: `configs/video_world/*.yaml`; notes and claims: `docs/video_world.md`.
"""
from __future__ import annotations

import copy
import functools
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from diffusers import UNet2DConditionModel, UNet3DConditionModel
from tokenizers import Tokenizer, models
from transformers import CLIPTextModel, PreTrainedTokenizerFast

from modules.models.tiny import sd_scheduler
from modules.sampling import SamplingCallback
from modules.training import NOISE_SAMPLERS, TrainingModule, truncated_snr_weights, weighted_mse

REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------- model
@dataclass
class VideoUNetConfig:
    """The pixel-space UNet3D: the image world's layout with 3-D blocks (temporal convolutions in
    every block, temporal attention wherever there is spatial attention, a temporal transformer
    after the input convolution).

    `frame_position`: a fourth input channel holding each frame's place in the clip (the `unet3d`
    family's `frame_position_code`, appended by its denoiser; recorded in `model_index.json`). The
    stock UNet3D cannot order its frames from noise alike in every frame (no temporal positional
    embedding), so it cannot draw a pan in the captioned direction; with the channel each frame
    knows where it is. Its `conv_in` weights start at zero (step 0 = the model without it).

    `attention_head_dim`: in `UNet3DConditionModel` this *is* the size of a head of the spatial and
    temporal attentions (channels / it = heads; the 2-D UNet reads the same key as the number of
    heads), and the input temporal transformer has 8 heads of it. The image world's single 64-wide
    head would need 64 here, which makes the input transformer 512 wide at 32×32 (5.3 M parameters,
    ~40 s per training step on CPU); 8 (8 heads of 8) keeps it 64 wide (2.9 M parameters in all).
    The copied spatial attention weights are then split into 8 heads: at step 0 the ε-MSE on the
    motion clips was 0.052 vs 0.049 for the image world itself (64 heads of 1: 0.057)."""

    sample_size: int = 32
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    down_block_types: tuple[str, ...] = ("DownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "UpBlock3D")
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 8
    frame_position: bool = False


def build_video_unet(cfg: VideoUNetConfig, cross_attention_dim: int, in_channels: int = 3) -> UNet3DConditionModel:
    """The UNet3D of `cfg` taking `in_channels` (3 RGB; 4 with the frame-position channel)."""
    return UNet3DConditionModel(
        sample_size=cfg.sample_size, in_channels=in_channels, out_channels=3, block_out_channels=tuple(cfg.block_out_channels),
        down_block_types=tuple(cfg.down_block_types), up_block_types=tuple(cfg.up_block_types),
        layers_per_block=cfg.layers_per_block, cross_attention_dim=cross_attention_dim,
        attention_head_dim=cfg.attention_head_dim, norm_num_groups=cfg.norm_num_groups,
    )


TEMPORAL_KEYS = ("temp_convs", "temp_attentions", "transformer_in")


def is_temporal(name: str) -> bool:
    """A parameter of the temporal layers (the rest are the spatial layers of the image UNet)."""
    return any(k in name.split(".") for k in TEMPORAL_KEYS)


@torch.no_grad()
def zero_temporal_outputs(unet: UNet3DConditionModel) -> int:
    """Zero the output projections of the temporal transformers, so (with diffusers' zero-initialised
    temporal convolutions) every temporal layer starts as the identity. Returns how many."""
    n = 0
    for name, mod in unet.named_modules():
        if name.split(".")[-1] == "proj_out" and is_temporal(name):
            mod.weight.zero_()
            mod.bias.zero_()
            n += 1
    return n


@torch.no_grad()
def init_from_image_unet(unet3d: UNet3DConditionModel, unet2d: UNet2DConditionModel) -> dict[str, list[str]]:
    """Copy every tensor of the 2-D UNet into the 3-D one where the names match and the shapes match
    up to trailing 1×1 dimensions (1×1 convolution = linear projection). Returns the names copied,
    the 3-D tensors left as they were, and the 2-D tensors not used (a layout mismatch: refused)."""
    src = unet2d.state_dict()
    dst = unet3d.state_dict()
    copied, kept = [], []
    for k, v in dst.items():
        w = src.get(k)
        if w is not None and w.numel() == v.numel() and w.squeeze().shape == v.squeeze().shape:
            v.copy_(w.reshape(v.shape).to(v.dtype))
            copied.append(k)
        else:
            kept.append(k)
    unused = sorted(set(src) - set(copied))
    spatial_kept = [k for k in kept if not is_temporal(k)]
    if unused or spatial_kept:
        raise ValueError(
            f"the image UNet does not match the video UNet's spatial layers: {len(unused)} image tensors unused "
            f"(e.g. {unused[:3]}), {len(spatial_kept)} spatial video tensors without a source (e.g. {spatial_kept[:3]}); "
            "set model.init_args.unet to the image world's layout (block_out_channels, block types, heads) "
            "or init_from: null"
        )
    return {"copied": copied, "kept": kept, "unused": unused}


def extend_text_encoder(tokenizer: PreTrainedTokenizerFast, text_encoder: CLIPTextModel, words: list[str],
                        seed: int = 0) -> tuple[PreTrainedTokenizerFast, CLIPTextModel]:
    """The word tokenizer with `words` it lacks appended (existing ids unchanged) and the CLIP text
    encoder with one new token-embedding row per new word (seeded, with the existing rows' std);
    every other weight is the original's. Returns new objects."""
    vocab = dict(sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]))
    new = [w for w in dict.fromkeys(w.lower() for w in words) if w not in vocab]
    for w in new:
        vocab[w] = len(vocab)
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    if not isinstance(backend.model, models.WordLevel):
        raise ValueError(f"extend_text_encoder needs a word-level tokenizer, got {type(backend.model).__name__}")
    backend.model = models.WordLevel(vocab=vocab, unk_token=tokenizer.unk_token)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=tokenizer.model_max_length, pad_token=tokenizer.pad_token,
        unk_token=tokenizer.unk_token, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token,
    )
    cfg = copy.deepcopy(text_encoder.config)
    cfg.vocab_size = len(vocab)
    te = CLIPTextModel(cfg).to(text_encoder.dtype)
    e = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        state = te.state_dict()
        for k, v in text_encoder.state_dict().items():
            if state[k].shape == v.shape:
                state[k].copy_(v)
            elif state[k].data_ptr() != te.get_input_embeddings().weight.data_ptr():
                raise ValueError(f"extend_text_encoder: {k} changed shape {tuple(v.shape)} -> {tuple(state[k].shape)}")
        g = torch.Generator().manual_seed(seed)
        extra = torch.randn(len(new), e.shape[1], generator=g) * e.float().std()
        te.get_input_embeddings().weight.copy_(torch.cat([e, extra.to(e.dtype)]))
    return tok, te.requires_grad_(False).eval()


def video_spec(unet: UNet3DConditionModel, text_encoder: CLIPTextModel, tokenizer, scheduler=None, path: str = "(in memory)"):
    """A `unet3d` family spec around parts in memory (pixel space: no VAE); a UNet taking 4 channels
    gets the frame-position channel."""
    from modules.models.families.unet3d import UNet3DSpec

    return UNet3DSpec(path=path, model_id="tiny-video-world", dtype=torch.float32, scheduler=scheduler or sd_scheduler(),
                      vae=None, model=unet, text_encoders=[text_encoder], tokenizers=[tokenizer],
                      frame_position=unet.config.in_channels == 4)


# ----------------------------------------------------------------------------------- noise prior
MIXED_RHO = 0.5  # PYoCo's "mixed" noise with α = 1: correlation ρ = α² / (1 + α²) between frames


def mix_frames(z: torch.Tensor, rho: float = MIXED_RHO) -> torch.Tensor:
    """White noise `(B, C, F, h, w)` -> frame-correlated noise with the same marginals: every element
    N(0, 1), correlation `rho` between two frames at the same place (PYoCo's mixed noise,
    ε_f = √ρ·ε_shared + √(1-ρ)·ε_f'), exactly: the frame mean is scaled to variance ρ + (1-ρ)/F and
    the rest to (1-ρ)(F-1)/F. Deterministic, so a seeded white z_T stays seeded."""
    f = z.shape[2]
    m = z.mean(2, keepdim=True)
    return math.sqrt(rho * f + 1 - rho) * m + math.sqrt(1 - rho) * (z - m)


def mixed_noise(shape: tuple, generator: torch.Generator, device=None) -> torch.Tensor:
    """The training base's noise-sampler signature for `noise: mixed` (`modules.training.NOISE_SAMPLERS`)."""
    return mix_frames(torch.randn(shape, generator=generator))


NOISE_SAMPLERS.setdefault("mixed", mixed_noise)


class MixedNoise(SamplingCallback):
    """Sampling from noise (`generate`, label "generate") starts from the frame-correlated prior a
    `noise: mixed` model was trained on; inversions, reconstructions and edits are left alone (their
    z_T comes from DDIM inversion)."""

    def __init__(self, rho: float = MIXED_RHO):
        self.rho = rho

    def initial_noise(self, state, z):
        return mix_frames(z, self.rho) if state.extras.get("label") == "generate" else z


def noise_callbacks(spec) -> list:
    """The sampling callbacks a saved video world needs for `generate` (its `model_index.json`
    training record): `[MixedNoise(rho)]` for `noise: mixed`, else none."""
    info = {}
    f = Path(getattr(spec, "path", "")) / "model_index.json"
    if f.is_file():
        info = json.loads(f.read_text()).get("training", {})
    return [MixedNoise(info.get("noise_rho", MIXED_RHO))] if info.get("noise") == "mixed" else []


# ----------------------------------------------------------------------------------------- module
class VideoWorldModule(TrainingModule):
    def __init__(
        self,
        unet: VideoUNetConfig | None = None,
        init_from: str | None = "tiny-world",
        lr: float = 1e-3,
        spatial_lr: float = 2e-4,
        spatial_start_step: int = 0,
        weight_decay: float = 1e-2,
        warmup_steps: int = 20,
        total_steps: int = 400,
        time_budget_s: float | None = None,
        min_lr_ratio: float = 0.05,
        ema_decay: float = 0.99,
        output_dir: str | None = None,
        save_dtype: Literal["float16", "float32"] = "float16",
        seed: int = 0,
        noise: Literal["white", "mixed"] = "white",
        snr_gamma: float | None = None,
        loss_weighting: Literal["none", "truncated_snr"] = "none",
        max_loss_weight: float | None = None,
        high_noise_fraction: float = 0.0,
        high_noise_start: int = 500,
        grad_clip: float | None = 1.0,
        recipe: str = "",
    ):
        """
        Args:
            unet: the UNet3D layout (pixel space, 3 channels in/out).
            init_from: image world (preset name or diffusers folder) whose spatial UNet layers, text
                encoder and tokenizer start the video world (its layout must match `unet`); or a video
                world (`tiny-video-world`, a `unet3d` folder of this layout) whose whole UNet, text
                encoder and tokenizer are taken as they are (continued training); None = random
                UNet, a fresh seeded CLIP and word tokenizer (tests).
            lr: AdamW peak learning rate of the temporal layers.
            spatial_lr: peak learning rate of the spatial layers (0 = frozen throughout).
            spatial_start_step: the spatial layers keep lr 0 before this step (temporal layers first),
                then warm up over `warmup_steps` like the rest.
            weight_decay: AdamW weight decay.
            warmup_steps: linear warmup steps.
            total_steps: length of the cosine schedule (set it to the trainer's `max_steps`).
            time_budget_s: if set, the cosine also advances with wall time (progress = max of the
                step and time fractions), so a run cut by `max_time` still ends annealed.
            min_lr_ratio: final learning rate / peak.
            ema_decay: EMA of the UNet weights (0 = off); the EMA weights are the ones saved.
            output_dir: where `on_train_end` writes the diffusers folder (None = don't).
            save_dtype: dtype of the saved UNet weights (float16 halves the size; loads as fp32).
            seed: UNet init of the temporal layers and the training noise/timestep streams.
            noise: training noise: `white`, or `mixed` (frames correlated by ρ = 0.5, PYoCo): a
                frame-per-frame image model then already draws similar frames, so the temporal
                layers learn coherence and motion from fewer steps; `generate` must then start from
                the same prior (`noise_callbacks(spec)` / `MixedNoise`; recorded in the model card).
            snr_gamma: Min-SNR-γ loss weighting (Hang et al. 2023): each item's ε-MSE weighted by
                min(SNR, γ)/SNR, i.e. the low-noise steps (SNR > γ) count less and the high-noise
                steps — where a clip's layout and motion are decided — relatively more (None = plain
                ε-MSE). Added as the method term `min_snr` of `extra_loss`: total = mean(w·err²).
            loss_weighting: `none` (ε-MSE) or `truncated_snr`: ε-MSE × max(1, 1/SNR(t)), i.e. an x0-MSE
                at every noise level above SNR 1 (the training base's `truncated_snr_weights`). Plain
                ε-MSE (and Min-SNR) weighs an image error at t = 800 ~0.04× and at t = 950 ~0.01× of
                one at SNR 1, yet those are the steps where only the caption can tell the direction
                of the motion; the GP worlds' lesson (docs/gp.md). Not with `snr_gamma`.
            max_loss_weight: cap on the `truncated_snr` weight (None: ~210 at t = 999).
            high_noise_fraction: the share of training items whose timestep is drawn from
                [`high_noise_start`, T) instead of [0, T): the steps where x_t no longer shows the
                motion, so only the caption can tell it (0 = uniform).
            high_noise_start: the lower end of that range.
            grad_clip: gradient-norm clipping.
            recipe: the config file the run came from (recorded in the model card).
        """
        super().__init__(seed=seed, noise=noise, grad_clip=grad_clip)
        unet = VideoUNetConfig(**unet) if isinstance(unet, dict) else (unet or VideoUNetConfig())
        self.unet_cfg = unet
        self.save_hyperparameters()
        from data.motion_clips import MOTION_WORDS

        if loss_weighting not in ("none", "truncated_snr"):
            raise ValueError(f"model.init_args.loss_weighting must be none or truncated_snr, got {loss_weighting!r}")
        if loss_weighting != "none" and snr_gamma:
            raise ValueError("model.init_args.loss_weighting and snr_gamma are two loss weightings; set one "
                             "(snr_gamma: null with loss_weighting: truncated_snr)")
        if not 0 <= high_noise_fraction <= 1:
            raise ValueError(f"model.init_args.high_noise_fraction must be in [0, 1], got {high_noise_fraction}")
        self.init_report: dict[str, list[str]] = {}
        continued = False
        if init_from:
            from modules.models.spec import load_model

            world = load_model(init_from)
            tok, te = extend_text_encoder(world.tokenizers[0], world.text_encoders[0], MOTION_WORDS, seed=seed)
            torch.manual_seed(seed)
            self.unet = build_video_unet(unet, cross_attention_dim=te.config.hidden_size,
                                         in_channels=world.network.config.in_channels if world.family == "unet3d" else 3)
            if world.family == "unet3d":
                if getattr(world, "frame_position", False) and not unet.frame_position:
                    raise ValueError(f"model.init_args.init_from '{init_from}' has the frame-position channel; "
                                     "set model.init_args.unet.frame_position: true")
                try:
                    self.unet.load_state_dict(world.unet.float().state_dict())
                except RuntimeError as e:
                    raise ValueError(f"model.init_args.init_from '{init_from}': its UNet3D does not match "
                                     f"model.init_args.unet ({e}); set unet to the world's layout") from None
                continued = True
                self.init_report = {"copied": list(self.unet.state_dict()), "kept": [], "unused": []}
            elif world.family == "sd":
                self.init_report = init_from_image_unet(self.unet, world.unet)
            else:
                raise ValueError(f"model.init_args.init_from '{init_from}' is a '{world.family}' model; "
                                 "use an image world (family sd, e.g. tiny-world) or a video world (unet3d)")
            del world
        else:
            from data.photos import PHOTOS
            from modules.models.tiny import tiny_text_encoder
            from modules.models.tokenizer import build_word_tokenizer

            tok = build_word_tokenizer([w for c in PHOTOS.values() for w in c.lower().split()] + MOTION_WORDS)
            te = tiny_text_encoder(len(tok), hidden=64, max_len=16, seed=seed).requires_grad_(False).eval()
            torch.manual_seed(seed)
            self.unet = build_video_unet(unet, cross_attention_dim=te.config.hidden_size)
        if not continued:
            zero_temporal_outputs(self.unet)
        if unet.frame_position:
            from modules.gp_finetune import widen_conv_in

            widen_conv_in(self.unet, 4)  # zero weights for the frame-position channel (no-op if it has it)
        self.text_encoder = te
        self.tokenizer = tok
        self.spec = video_spec(self.unet, self.text_encoder, self.tokenizer)
        self.ema = copy.deepcopy(self.unet).requires_grad_(False).eval() if ema_decay > 0 else None
        self._t0 = None
        self.wall_time = 0.0
        self.last_loss = float("nan")
        self._loss_window: list[float] = []

    def train(self, mode: bool = True):
        super().train(mode)
        self.text_encoder.eval()
        if self.ema is not None:
            self.ema.eval()
        return self

    # -- training
    def training_step(self, batch, batch_idx):
        x0 = batch["pixel_values"]
        cond = self.spec.encode_prompt(list(batch["caption"])).to(x0.device)
        loss, aux = self.diffusion_loss(x0, cond)
        plain = loss
        if self.hparams.loss_weighting == "truncated_snr":
            loss = weighted_mse(aux, truncated_snr_weights(self.spec.scheduler, aux.t, self.hparams.max_loss_weight))
            self.log("train/target_mse", plain.detach(), on_step=True, batch_size=x0.shape[0])
        terms = {"diffusion": loss, **self.extra_loss(batch, aux)}
        total = sum(terms.values())
        self.check_finite(total, terms)
        self.log_terms(total, terms, batch_size=x0.shape[0])
        self._loss_window = (self._loss_window + [float(plain.detach())])[-50:]
        return total

    def sample_timesteps(self, n: int, num_train_timesteps: int) -> torch.Tensor:
        t = super().sample_timesteps(n, num_train_timesteps)
        frac = self.hparams.high_noise_fraction
        if frac > 0:
            g = self.generator("high_noise")
            lo = min(self.hparams.high_noise_start, num_train_timesteps - 1)
            high = torch.randint(lo, num_train_timesteps, (n,), generator=g)
            t = torch.where(torch.rand(n, generator=g) < frac, high, t)
        return t

    def extra_loss(self, batch, aux) -> dict[str, torch.Tensor]:
        gamma = self.hparams.snr_gamma
        if not gamma:
            return {}
        acp = self.spec.scheduler.alphas_cumprod.to(aux.t.device, torch.float32)[aux.t]
        w = (gamma * (1 - acp) / acp).clamp(max=1.0)  # min(SNR, γ) / SNR
        err = (aux.output.float() - aux.target.float()).pow(2).flatten(1).mean(1)
        return {"min_snr": ((w - 1) * err).mean()}

    def on_train_start(self):
        self._t0 = time.time() - self.wall_time

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.ema is not None:
            n = self.train_iteration
            d = min(self.hparams.ema_decay, (1 + n) / (10 + n))
            with torch.no_grad():
                for pe, p in zip(self.ema.parameters(), self.unet.parameters()):
                    pe.lerp_(p.detach(), 1 - d)
        if self._t0 is not None:
            self.wall_time = time.time() - self._t0

    def param_groups(self) -> list[dict]:
        temporal = [p for n, p in self.unet.named_parameters() if is_temporal(n)]
        spatial = [p for n, p in self.unet.named_parameters() if not is_temporal(n)]
        groups = [{"params": temporal, "lr": self.hparams.lr, "name": "temporal"}]
        if self.hparams.spatial_lr > 0:
            groups.append({"params": spatial, "lr": self.hparams.spatial_lr, "name": "spatial"})
        else:
            for p in spatial:
                p.requires_grad_(False)
        return groups

    def configure_optimizers(self):
        hp = self.hparams
        groups = self.param_groups()
        opt = torch.optim.AdamW(groups, weight_decay=hp.weight_decay)

        def cosine(step, start=0):
            if step < start:
                return 0.0
            step -= start
            if step < hp.warmup_steps:
                return (step + 1) / hp.warmup_steps
            frac = (step - hp.warmup_steps) / max(1, hp.total_steps - start - hp.warmup_steps)
            if hp.time_budget_s and self._t0 is not None:
                frac = max(frac, (time.time() - self._t0) / hp.time_budget_s)
            frac = min(1.0, frac)
            return hp.min_lr_ratio + (1 - hp.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))

        lambdas = [cosine] + ([lambda s: cosine(s, hp.spatial_start_step)] if len(groups) > 1 else [])
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambdas)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- checkpoints: the EMA and the clock travel with the trainable tensors
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.ema is not None:
            checkpoint["ema_state"] = self.ema.state_dict()
        checkpoint["wall_time"] = self.wall_time

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.ema is not None and "ema_state" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema_state"])
        self.wall_time = float(checkpoint.get("wall_time", 0.0))

    def on_train_end(self):
        self.last_loss = float(np.mean(self._loss_window)) if self._loss_window else float("nan")
        if self.hparams.output_dir:
            self.save_video_world(self.hparams.output_dir)

    # -- export
    @property
    def final_unet(self) -> UNet3DConditionModel:
        return self.ema if self.ema is not None else self.unet

    def final_spec(self):
        """The spec of the weights that get saved (the EMA UNet when EMA is on)."""
        return video_spec(self.final_unet, self.text_encoder, self.tokenizer)

    def save_video_world(self, path: str | Path) -> Path:
        """Write the diffusers layout (unet/, text_encoder/, tokenizer/, scheduler/, model_index.json
        naming `TextToVideoSDPipeline` with no VAE) and a README.md model card."""
        path = Path(path)
        if not path.is_absolute():
            path = REPO_ROOT / path
        path.mkdir(parents=True, exist_ok=True)
        unet = copy.deepcopy(self.final_unet).to(getattr(torch, self.hparams.save_dtype)).cpu()
        unet.save_pretrained(path / "unet", safe_serialization=True)
        self.text_encoder.save_pretrained(path / "text_encoder", safe_serialization=True)
        self.tokenizer.save_pretrained(path / "tokenizer")
        self.spec.scheduler.save_pretrained(path / "scheduler")
        steps = int(self.train_iteration)
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        data = {k: v for k, v in dict(getattr(dm, "hparams", {})).items() if not k.startswith("_")} if dm is not None else {}
        info = {
            "_class_name": "TextToVideoSDPipeline", "_name_or_path": "tiny-video-world",
            "unet": ["diffusers", "UNet3DConditionModel"], "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "PreTrainedTokenizerFast"], "scheduler": ["diffusers", "DDIMScheduler"],
            "vae": [None, None],
            **({"frame_position": True} if self.unet_cfg.frame_position else {}),
            "training": {"steps": steps, "final_loss": round(self.last_loss, 5), "wall_time_s": round(self.wall_time, 1),
                         "seed": self.hparams.seed, "recipe": self.hparams.recipe,
                         "batch_size": data.get("batch_size"), "init_from": self.hparams.init_from,
                         "noise": self.hparams.noise, **({"noise_rho": MIXED_RHO} if self.hparams.noise == "mixed" else {}),
                         "snr_gamma": self.hparams.snr_gamma,
                         **({"loss_weighting": self.hparams.loss_weighting, "max_loss_weight": self.hparams.max_loss_weight}
                            if self.hparams.loss_weighting != "none" else {})},
        }
        (path / "model_index.json").write_text(json.dumps(info, indent=2) + "\n")
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name != "README.md")
        n_params = sum(p.numel() for p in self.final_unet.parameters())
        n_temporal = sum(p.numel() for n, p in self.final_unet.named_parameters() if is_temporal(n))
        hp = self.hparams
        data_line = ", ".join(f"{k} {v}" for k, v in data.items()) or "see the recipe"
        noise_note = (f" (frames correlated by ρ = {MIXED_RHO}); sample from the same prior: "
                      "`generate(spec, ..., callbacks=modules.video_world.noise_callbacks(spec))`"
                      if hp.noise == "mixed" else "")
        card = f"""# tiny-video-world

A pixel-space text-to-video diffusion model (diffusers `UNet3DConditionModel`, no VAE: 8 frames of
32×32 RGB in [-1, 1]) trained on CPU on camera-motion clips made on the fly from the eight
scikit-image photographs of `data/photos.py` (`data/motion_clips.py`: pans in eight directions at
1–3 px/frame, zoom in/out, still camera; captions such as "a photo of a cat, panning left quickly").
Spatial layers initialised from the image world `{hp.init_from}`, temporal layers from the identity.
Load it with `modules.models.spec.load_model("tiny-video-world")` (family `unet3d`, pixel space).

- recipe: `python -m train fit -c {hp.recipe or 'configs/video_world/tiny.yaml'}`
- seed: {hp.seed}
- steps: {steps} (batch {data.get('batch_size', '?')} clips)
- final loss (ε-MSE, mean of the last 50 steps): {self.last_loss:.4f}
- wall time: {self.wall_time / 60:.1f} min of training
- data: {data_line}
- UNet: {n_params / 1e6:.2f} M parameters ({n_temporal / 1e6:.2f} M temporal), {json.dumps(asdict(self.unet_cfg))};
  weights saved as {hp.save_dtype} (the loader gives fp32); EMA decay {hp.ema_decay}
- text encoder: the image world's frozen random CLIP text model with the motion words appended
  to its word-level tokenizer (new embedding rows seeded {hp.seed})
- frame position: {"a fourth input channel holds each frame's place in the clip (-1 first … +1 last; `model_index.json` `frame_position: true`, appended by the `unet3d` family's denoiser)" if self.unet_cfg.frame_position else "none (stock UNet3D: the frames are told apart only by the temporal convolutions' padding)"}
- scheduler: Stable Diffusion 1.x's (scaled-linear betas 0.00085–0.012, 1000 steps), ε-prediction, DDIM sampling
- training noise: {hp.noise}{noise_note}; loss: ε-MSE{f", Min-SNR-γ weighted (γ = {hp.snr_gamma})" if hp.snr_gamma else ""}{f", × max(1, 1/SNR) (truncated SNR: an x0-MSE at high noise; weight cap {hp.max_loss_weight})" if hp.loss_weighting == "truncated_snr" else ""}
- optimiser: AdamW, temporal lr {hp.lr}, spatial lr {hp.spatial_lr} from step {hp.spatial_start_step},
  weight decay {hp.weight_decay}, {hp.warmup_steps} warmup steps, cosine to {hp.min_lr_ratio}·lr over
  {hp.total_steps} steps{f' or {hp.time_budget_s:.0f} s' if hp.time_budget_s else ''}; gradient clipping {hp.grad_clip}
- folder size: {size / 1e6:.1f} MB

Claims measured on these weights: `docs/video_world.md`, `tests/test_video_world_claims.py`.
"""
        (path / "README.md").write_text(card)
        return path


# ------------------------------------------------------------------------------ evaluation helpers
# Shared by tests/test_video_world_claims.py and scripts/video_world_results.py (docs/video_world.md).
CLASSIFY_SCALES = (40, 44, 48, 52, 56)  # the canvas sides of the training clips (data.motion_clips)


@functools.lru_cache(maxsize=2)
def photo_windows_multiscale(scales=CLASSIFY_SCALES, size: int = 32, stride: int = 1) -> tuple[list[torch.Tensor], list[str]]:
    """Every `size`×`size` window (step `stride`) of every photo at every canvas side in `scales`:
    per photo a tensor `(N, 3·size·size)` in [-1, 1], and the photo names (cached; do not modify)."""
    from data.photos import PHOTOS, photo

    names = list(PHOTOS)
    out = []
    for n in names:
        wins = []
        for s in scales:
            img = torch.from_numpy(photo(n, s)).permute(2, 0, 1).float() / 127.5 - 1
            w = img.unfold(1, size, stride).unfold(2, size, stride)  # (3, Y, X, size, size)
            wins.append(w.permute(1, 2, 0, 3, 4).reshape(-1, 3 * size * size))
        out.append(torch.cat(wins))
    return out, names


def classify_video(video: torch.Tensor, windows=None) -> tuple[list[str], torch.Tensor]:
    """Nearest photo of each frame of `(3, F, H, W)` / `(1, 3, F, H, W)` in [-1, 1]: the photo with
    the window (any position, any training scale) nearest in pixel L2. Returns (names, distances (F, P))."""
    wins, names = windows if windows is not None else photo_windows_multiscale()
    v = (video[0] if video.ndim == 5 else video).float().transpose(0, 1).flatten(1)  # (F, 3·H·W)
    d = torch.stack([torch.cdist(v, w).min(1).values for w in wins], 1) ** 2 / v.shape[1]
    return [names[i] for i in d.argmin(1).tolist()], d


CLAIM_SEEDS = (0, 1, 2)
CLAIM_SPEED = 2  # px/frame of the sampled pans ("steadily")
CLAIM_STEPS, CLAIM_CFG = 20, 4.0


def claim_prompts(seed: int) -> list[tuple[str, "Motion"]]:
    """The claim set of a seed: the eight pan directions at CLAIM_SPEED, direction i over photo
    (i + seed) mod 8 — every photo and every direction once per seed."""
    from data.motion_clips import PAN_DIRECTIONS, Motion
    from data.photos import PHOTOS

    names = list(PHOTOS)
    return [(names[(i + seed) % len(names)], Motion("pan", d, CLAIM_SPEED)) for i, d in enumerate(PAN_DIRECTIONS)]


@torch.no_grad()
def sample_videos(spec, prompts: list[str], seed: int, num_steps: int = CLAIM_STEPS, guidance_scale: float = CLAIM_CFG,
                  num_frames: int = 8, size: int = 32, batch: int = 8) -> torch.Tensor:
    """Text-to-video samples `(len(prompts), 3, F, size, size)` in [-1, 1] through the one loop
    (`modules.editing.generate`, with the model's noise prior: `noise_callbacks`); every item starts
    from the noise of `seed` (the same z_T for every prompt, so prompts are compared on equal noise)."""
    from modules.editing import generate

    out = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i:i + batch]
        z = torch.randn((1, 3, num_frames, size, size), generator=torch.Generator().manual_seed(seed))
        out.append(generate(spec, chunk, num_frames, size, size, num_steps, guidance_scale,
                            callbacks=noise_callbacks(spec), noise=z.expand(len(chunk), -1, -1, -1, -1).clone(),
                            progress=False))
    return torch.cat(out)


@torch.no_grad()
def motion_study(spec, seeds=CLAIM_SEEDS, num_steps: int = CLAIM_STEPS, guidance_scale: float = CLAIM_CFG,
                 log=print) -> dict:
    """The sampling claims. Per seed: the eight `claim_prompts` clips ("<photo caption>, panning
    <direction> steadily") and the same photos with their plain captions (no motion words), on the
    same noise. Per clip: fraction of frames classified as the named photo, the phase-correlation
    motion against the captioned motion (`modules.metrics.motion_error`), the mean speed of the plain
    caption's clip. Per seed: the claim numbers (`summary`)."""
    from data.motion_clips import motion_caption
    from data.photos import PHOTOS
    from modules.metrics import motion_error

    wins = photo_windows_multiscale()
    rows, videos = [], {}
    for s in seeds:
        t0 = time.time()
        pairs = claim_prompts(s)
        moving = sample_videos(spec, [motion_caption(p, m) for p, m in pairs], s, num_steps, guidance_scale)
        plain = sample_videos(spec, [PHOTOS[p] for p, _ in pairs], s, num_steps, guidance_scale)
        for (p, m), v, v0 in zip(pairs, moving, plain):
            labels, _ = classify_video(v, wins)
            labels0, _ = classify_video(v0, wins)
            r = motion_error(v, m.displacement)
            r0 = motion_error(v0, (0.0, 0.0))
            rows.append({
                "seed": s, "photo": p, "motion": m.name,
                "photo_frames": sum(lab == p for lab in labels) / len(labels),
                "plain_photo_frames": sum(lab == p for lab in labels0) / len(labels0),
                "direction_rate": r["direction_rate"], "mean_speed": r["mean_speed"], "speed_error": r["speed_error"],
                "endpoint_error": r["mean_endpoint_error"], "plain_mean_speed": r0["mean_speed"],
                "displacement": r["displacement"].tolist(),
            })
            videos[(s, p, m.name)] = v
            videos[(s, p, "plain")] = v0
        log(f"seed {s}: {len(pairs)} + {len(pairs)} clips in {time.time() - t0:.0f}s")
    summary = {}
    for s in seeds:
        sel = [r for r in rows if r["seed"] == s]
        summary[f"seed{s}"] = {
            "photo_frames": float(np.mean([r["photo_frames"] for r in sel])),
            "plain_photo_frames": float(np.mean([r["plain_photo_frames"] for r in sel])),
            "direction_rate": float(np.mean([r["direction_rate"] for r in sel])),
            "speed_error": float(np.mean([r["speed_error"] for r in sel])),
            "max_speed_error": float(np.max([r["speed_error"] for r in sel])),
            "mean_speed": float(np.mean([r["mean_speed"] for r in sel])),
            "plain_mean_speed": float(np.mean([r["plain_mean_speed"] for r in sel])),
            "plain_slower_fraction": float(np.mean([r["plain_mean_speed"] < r["mean_speed"] for r in sel])),
        }
    return {"rows": rows, "summary": summary, "videos": videos, "num_steps": num_steps,
            "guidance_scale": guidance_scale, "speed": CLAIM_SPEED}


PAN_SOURCE_MOTION = ("pan", "right", 1)  # the bundled pans: the window moves 1 px right per frame


def pan_prompt(name: str) -> str:
    """The caption of the bundled pan over photo `name` in the video world's words."""
    from data.motion_clips import Motion, motion_caption

    return motion_caption(name, Motion(*PAN_SOURCE_MOTION))


@torch.no_grad()
def reconstruct_pan(spec, name: str, num_steps: int = 20) -> np.ndarray:
    """DDIM inversion + CFG-1 reconstruction of the bundled pan over `name` with `pan_prompt(name)`
    through `modules.editing.edit_clip`; the per-frame PSNR (dB)."""
    from data.clip_dataset import ClipDataset
    from modules.editing import EditConfig, edit_clip
    from modules.metrics import psnr

    pixels = ClipDataset(f"samples/pan_{name}.mp4", prompt=pan_prompt(name), num_frames=8, height=32,
                         width=32)[0]["pixel_values"][None]
    res = edit_clip(spec, pixels, pan_prompt(name), EditConfig(num_inference_steps=num_steps, reconstruct=True),
                    progress=False)
    return psnr(res.source[0], res.reconstruction[0])
