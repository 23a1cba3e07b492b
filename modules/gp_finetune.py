"""Fine-tuning an image UNet (`sd` or `sdxl` family) for conditional restoration with Gaussian-process
noise (METHODS.md §3; Warped, §4, samples these models).

Tasks by channel concatenation on the UNet input (`Conditioning.concat_latents`, appended after the
noisy latent by the family's denoiser):
- `super_resolution`: noisy latent ‖ latent of the low-res image upsampled (bicubic) to full size —
  2C input channels; ×8 by default for latent models, ×4 for pixel-space ones (the tiny world);
- `inpainting`: noisy latent ‖ mask (1 = regenerate, nearest-downsampled to the latent grid) ‖ latent
  of the masked image (`image · (mask < 0.5)`) — diffusers' inpainting layout, 2C + 1 channels.

`conv_in` is widened with zero weights for the new channels, its bias kept, so the widened model equals
the base at init; `in_channels` is registered in the UNet config (save_pretrained reloads it). A UNet
that already has the task's channel count is taken as it is; any other count is refused.

Training: the base's own target (ε / v / x0) at a uniform timestep with the forward process
z_t = √ᾱ z0 + √(1−ᾱ) ξ, ξ GP noise (`noise: gp`, one function per batch item and channel) or white
noise (`noise: white`). The whole UNet trains (fp32; frozen VAE and text encoders in `base_dtype`).
AdamW lr 5e-6, betas (0.9, 0.999), wd 1e-2, eps 1e-8, gradient clip 1.0. SDXL's added conditions per
item: time ids from the item's original size, crop top-left and target size.

`restore(...)`: conditional sampling of images or clips (frame by frame) from GP (or white) initial
noise through the shared loop (`modules.editing.generate`).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from modules.models.spec import ModelFamilyError, load_model
from modules.noise.gp import GPNoiseSampler, default_lengthscale
from modules.training import NOISE_SAMPLERS, TrainingModule, truncated_snr_weights, weighted_mse

FAMILIES = ("sd", "sdxl")
Task = Literal["super_resolution", "inpainting"]


class RestorationInputError(ValueError):
    pass


@dataclass
class GPConfig:
    """Gaussian-process noise (random Fourier features).

    Args:
        features: J, the number of random features per function (paper 3000).
        lengthscale: ℓ in unit-square units; None: 2/(π·R) for the latent side R (paper 0.004977 at
            R = 128), the largest ℓ whose 2σ-truncated frequencies stay at the grid's Nyquist limit.
        truncation: frequencies truncated per coordinate at this many standard deviations (2).
    """

    features: int = 3000
    lengthscale: float | None = None
    truncation: float = 2.0


@dataclass
class RestoreConfig:
    """How validation/predict restore.

    Args:
        num_inference_steps: steps of the deterministic DDIM loop on the scheduler's own grid.
        guidance_scale: classifier-free guidance on the caption (1: conditional only; the
            unconditional branch keeps the same concatenated image conditioning).
    """

    num_inference_steps: int = 50
    guidance_scale: float = 1.0


def default_scale(spec) -> int:
    """×8 for latent models, ×4 for pixel-space ones."""
    return 4 if spec.pixel_space else 8


def concat_channels(spec, task: str) -> int:
    c = spec.latent_channels
    return c if task == "super_resolution" else c + 1


def widen_conv_in(unet: nn.Module, in_channels: int) -> bool:
    """Give `unet.conv_in` `in_channels` inputs: the old weights first, zeros for the new channels, the
    bias kept; `in_channels` registered in the config. Returns False when it already has them."""
    old = unet.conv_in
    if old.in_channels == in_channels:
        return False
    if old.in_channels > in_channels:
        raise RestorationInputError(f"cannot narrow conv_in from {old.in_channels} to {in_channels} input channels")
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation,
                    old.groups, bias=old.bias is not None, padding_mode=old.padding_mode,
                    device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        if old.bias is not None:
            new.bias.copy_(old.bias)
    new.requires_grad_(old.weight.requires_grad)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return True


def _frames(x: torch.Tensor, name: str) -> torch.Tensor:
    """`(B, C, H, W)` -> `(B, C, 1, H, W)`; 5-D passes."""
    if x.ndim == 4:
        return x[:, :, None]
    if x.ndim != 5:
        raise RestorationInputError(f"{name} must be (B, C, H, W) or (B, C, F, H, W), got shape {tuple(x.shape)}")
    return x


def _per_frame(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a 4-D image op to every frame of `(B, C, F, H, W)`."""
    b, c, f, h, w = x.shape
    y = fn(x.transpose(1, 2).reshape(b * f, c, h, w))
    return y.reshape(b, f, *y.shape[1:]).transpose(1, 2)


def upsample(low_res: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling by `scale` (the SR model's conditioning and the trivial baseline), clamped."""
    low = _frames(low_res, "low_res")
    return _per_frame(lambda x: F.interpolate(x.float(), scale_factor=scale, mode="bicubic",
                                              align_corners=False).clamp(-1, 1), low)


def condition_latents(spec, task: str, *, low_res: torch.Tensor | None = None, pixels: torch.Tensor | None = None,
                      mask: torch.Tensor | None = None, scale: int | None = None,
                      size: tuple[int, int] | None = None) -> torch.Tensor:
    """`concat_latents` `(B, Cc, F, h, w)` for the task. Images `(B, 3, H, W)` or clips `(B, 3, F, H, W)`
    in [-1, 1]; `mask` `(B, 1, [F,] H, W)`, 1 = regenerate. `size`: the expected (H, W) of the target
    (checked against the low-res input × scale)."""
    if task == "super_resolution":
        if low_res is None:
            raise RestorationInputError("super-resolution needs `low_res` (the batch has none: set data.init_args.task: super_resolution)")
        scale = scale or default_scale(spec)
        low = _frames(low_res, "low_res")
        if size is not None and (low.shape[-2] * scale, low.shape[-1] * scale) != tuple(size):
            raise RestorationInputError(
                f"low_res {tuple(low.shape[-2:])} × scale {scale} = {(low.shape[-2] * scale, low.shape[-1] * scale)} "
                f"does not match the target size {tuple(size)}; the data must downsample by the model's scale "
                f"(set data.init_args.scale: {scale}, or model.init_args.scale to the data's)"
            )
        return spec.encode(upsample(low, scale).to(spec.vae.dtype if spec.vae is not None else torch.float32))
    if task != "inpainting":
        raise RestorationInputError(f"task must be super_resolution or inpainting, got {task!r}")
    if pixels is None or mask is None:
        raise RestorationInputError("inpainting needs `pixels` and `mask` (the batch has no mask: set data.init_args.task: inpainting)")
    px, m = _frames(pixels, "pixels"), _frames(mask, "mask")
    if m.shape[1] != 1 or m.shape[0] != px.shape[0] or m.shape[2:] != px.shape[2:]:
        raise RestorationInputError(
            f"mask {tuple(mask.shape)} must be (B, 1, [F,] H, W) matching the image {tuple(pixels.shape)}"
        )
    m = (m > 0.5).to(px.dtype)
    masked = px * (1 - m)
    z = spec.encode(masked.to(spec.vae.dtype if spec.vae is not None else px.dtype))
    h, w = z.shape[-2:]
    m_lat = _per_frame(lambda x: F.interpolate(x, size=(h, w), mode="nearest"), m)
    return torch.cat([m_lat.to(z.dtype), z], dim=1)


def initial_noise(shape: tuple, noise: str, seed: int = 0, gp: GPConfig | None = None, device=None) -> torch.Tensor:
    """z_T of `shape` `(B, C, F, h, w)`: GP noise (one function per batch item, channel and frame) or white."""
    g = torch.Generator().manual_seed(seed)
    if noise == "gp":
        return GPNoiseSampler(**asdict(gp or GPConfig()))(shape, g, device=device)
    return torch.randn(shape, generator=g).to(device)


def restore(spec, task: str, prompts: list[str], *, low_res=None, pixels=None, mask=None, scale: int | None = None,
            noise: Literal["gp", "white"] | torch.Tensor = "gp", gp: GPConfig | None = None,
            num_inference_steps: int = 50, guidance_scale: float = 1.0, seed: int = 0, callbacks=(),
            progress: bool = False, denoiser=None) -> torch.Tensor:
    """Restore images `(B, 3, H, W)` or clips frame by frame `(B, 3, F, H, W)` (returned in the same
    layout, [-1, 1]): sampling from `noise` (`gp`, `white`, or a tensor z_T, e.g. Warped's warped noise)
    with the conditioning concatenated by the family denoiser, through `modules.editing.generate`."""
    from modules.editing import generate

    device = next(spec.network.parameters()).device
    scale = scale or default_scale(spec)
    image = (low_res if task == "super_resolution" else pixels)
    if image is None:
        raise RestorationInputError(f"{task} needs {'low_res' if task == 'super_resolution' else 'pixels and mask'}")
    was_image = image.ndim == 4
    ref = _frames(image, "input")
    f = ref.shape[2]
    h, w = ref.shape[-2:]
    if task == "super_resolution":
        h, w = h * scale, w * scale
    concat = condition_latents(spec, task, low_res=None if low_res is None else low_res.to(device),
                               pixels=None if pixels is None else pixels.to(device),
                               mask=None if mask is None else mask.to(device), scale=scale)
    shape = (len(prompts), *spec.latent_shape(f, h, w))
    zT = noise if isinstance(noise, torch.Tensor) else initial_noise(shape, noise, seed, gp, device)
    out = generate(spec, list(prompts), f, h, w, num_inference_steps=num_inference_steps,
                   guidance_scale=guidance_scale, seed=seed, callbacks=callbacks, concat=concat, noise=zT,
                   progress=progress, denoiser=denoiser)
    return out[:, :, 0] if was_image else out


def load_finetuned(base: str, folder=None, dtype: torch.dtype = torch.float32):
    """`(spec, card)`: the base model's spec with its UNet replaced by a GP fine-tuned export
    (`diffusers-model` folder), and the export's metadata (task, scale, noise, GP parameters). An
    export of another base (checksum in `export.json`) is refused. Without `folder`, `base` is a
    packaged conditional world (a preset such as `tiny-world-inpaint`, or a folder written by
    `package_world`): loaded as it is, its card from its `export.json`."""
    import json
    from pathlib import Path

    from diffusers import UNet2DConditionModel

    from modules.models.spec import resolve_model_path
    from modules.models.video_unet import VideoUNet

    if folder is None:
        path = resolve_model_path(base)
        card = _read_card(path, "a conditional world (a preset such as tiny-world-inpaint, or a folder written by "
                                "package_world); for an export, pass the base model and the export folder")
        spec = load_model(base, dtype=dtype)
        if spec.unet.config.in_channels != card.get("in_channels"):
            raise ValueError(f"{path}: the UNet takes {spec.unet.config.in_channels} channels, export.json says "
                             f"{card.get('in_channels')}")
        return spec, card
    folder = Path(folder)
    if not (folder / "unet" / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a GP fine-tuning export (needs export.json and unet/); "
                                "write one with the ExportAdapter callback or scripts/export.py")
    card = _read_card(folder, "a GP fine-tuning export; write one with the ExportAdapter callback or scripts/export.py")
    spec = load_model(base, dtype=dtype)
    if card.get("base_checksum") and card["base_checksum"] != spec.checksum():
        raise ValueError(f"{folder} was fine-tuned from a base with checksum {card['base_checksum']} "
                         f"({card.get('base_model')}), but '{base}' has {spec.checksum()}: load it on its own base")
    spec.unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype).eval().requires_grad_(False)
    spec.model = VideoUNet(spec.unet, "per_frame", temporal=False).eval()
    return spec, card


def _read_card(folder, what: str) -> dict:
    import json
    from pathlib import Path

    meta_file = Path(folder) / "export.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{folder} has no export.json: it is not {what}")
    card = json.loads(meta_file.read_text())
    if card.get("method") != GPFinetuneModule.method or card.get("task") not in ("super_resolution", "inpainting"):
        raise ValueError(f"{meta_file} is a {card.get('method')!r} export, not a GP fine-tuning one (method {GPFinetuneModule.method!r})")
    return card


def region_psnr(a: torch.Tensor, b: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """Per-item PSNR (dB) of images in [-1, 1] (range 2) over `region` (1 = counted; default: all)."""
    d = (a.float() - b.float()) ** 2
    if region is None:
        mse = d.flatten(1).mean(1)
    else:
        r = region.float().expand_as(d)
        mse = (d * r).flatten(1).sum(1) / r.flatten(1).sum(1).clamp_min(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


def baseline(task: str, *, low_res=None, pixels=None, mask=None, scale: int = 8) -> torch.Tensor:
    """The trivial restoration: bicubic upsampling (SR); the mask filled with the mean colour of the
    known pixels (inpainting; 0 where nothing is known)."""
    if task == "super_resolution":
        return upsample(low_res, scale)[:, :, 0] if low_res.ndim == 4 else upsample(low_res, scale)
    keep = (mask <= 0.5).float()
    dims = tuple(range(2, pixels.ndim))
    mean = (pixels * keep).sum(dims, keepdim=True) / keep.sum(dims, keepdim=True).clamp_min(1)
    return pixels * keep + mean * (1 - keep)


class GPFinetuneModule(TrainingModule):
    method = "gp-finetune"

    def __init__(
        self,
        model: str = "tiny-world",
        task: Task = "super_resolution",
        noise: Literal["gp", "white"] = "gp",
        gp: GPConfig | None = None,
        scale: int | None = None,
        lr: float = 5e-6,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 1e-2,
        eps: float = 1e-8,
        grad_clip: float | None = 1.0,
        gradient_checkpointing: bool = False,
        base_dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        seed: int = 0,
        restore: RestoreConfig | None = None,
        loss_weighting: Literal["none", "truncated_snr"] = "none",
        max_loss_weight: float | None = None,
        conv_in_lr_scale: float = 1.0,
    ):
        """
        Args:
            model: a local diffusers folder of an `sd` or `sdxl` model, or a preset (`tiny-world`,
                `tiny-sd`, `tiny-sdxl`).
            task: `super_resolution` (noisy ‖ upsampled low-res latent) or `inpainting` (noisy ‖ mask ‖
                masked-image latent).
            noise: `gp` (Gaussian-process noise in the forward process) or `white` (the baseline).
            gp: GP noise parameters (J, ℓ, truncation).
            scale: super-resolution factor; None: 8 for latent models, 4 for pixel-space ones.
            lr: AdamW learning rate (5e-6).
            betas: AdamW betas.
            weight_decay: AdamW weight decay (1e-2).
            eps: AdamW epsilon.
            grad_clip: gradient-norm clip (1.0).
            gradient_checkpointing: trade compute for memory in the UNet (SDXL).
            base_dtype: dtype of the frozen VAE and text encoders (`bfloat16` on GPUs); the UNet trains in fp32.
            seed: seeds the per-iteration noise and timesteps (with the iteration and rank).
            restore: how validation/predict restore.
            loss_weighting: per-timestep weight of the target's MSE. `none`: the plain MSE of the base's
                target (the paper's). `truncated_snr`: for ε-prediction, ε-MSE × max(1, 1/SNR(t)), i.e.
                x0-MSE × max(SNR, 1) (Salimans & Ho 2022): the plain loss where SNR ≥ 1, the x0 error above.
                With the plain ε-MSE an x0 error at high noise costs SNR(t)·(x0-MSE) (0.04× at t = 800 in
                the SD schedule), so a few hundred CPU steps teach the new channels little of what the
                sampler needs from them in its first, noisiest steps (the image conditioning).
            max_loss_weight: cap on the `truncated_snr` weight (None: no cap).
            conv_in_lr_scale: learning rate of the widened `conv_in` (its zero-initialised new channels are
                where the conditioning enters) relative to `lr` (1: one rate for the whole UNet).
        """
        super().__init__(seed=seed, noise=noise, grad_clip=grad_clip)
        if loss_weighting not in ("none", "truncated_snr"):
            raise ValueError(f"model.init_args.loss_weighting must be none or truncated_snr, got {loss_weighting!r}")
        if task not in ("super_resolution", "inpainting"):
            raise ValueError(f"model.init_args.task must be super_resolution or inpainting, got {task!r}")
        self.save_hyperparameters()
        self.gp_cfg = GPConfig(**gp) if isinstance(gp, dict) else (gp or GPConfig())
        self.restore_cfg = RestoreConfig(**restore) if isinstance(restore, dict) else (restore or RestoreConfig())
        if noise == "gp":
            self.noise_sampler = GPNoiseSampler(**asdict(self.gp_cfg))
        else:
            self.noise_sampler = NOISE_SAMPLERS[noise]
        self.spec = load_model(model, dtype=getattr(torch, base_dtype))
        if self.spec.family not in FAMILIES:
            raise ModelFamilyError(
                f"model.init_args.model '{model}' is a '{self.spec.family}' model; GP fine-tuning widens an image "
                f"UNet's conv_in (families {FAMILIES}). Use an SD 1.x/2.x or SDXL folder, or tiny-world / tiny-sdxl."
            )
        self.task = task
        self.scale = int(scale or default_scale(self.spec))
        self.base_checksum = self.spec.checksum()
        unet = self.spec.unet
        c = self.spec.latent_channels
        need = c + concat_channels(self.spec, task)
        have = unet.config.in_channels
        if have not in (c, need):
            raise RestorationInputError(
                f"model.init_args.model '{model}': its UNet's conv_in takes {have} channels, but task {task} needs "
                f"{c} (a base model, widened here) or {need} (already {task}: noisy {c} + "
                f"{'upsampled latent ' + str(c) if task == 'super_resolution' else 'mask 1 + masked latent ' + str(c)}); "
                "use a base model or one trained for this task"
            )
        unet.float().requires_grad_(True)
        self.widened = widen_conv_in(unet, need)
        if gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        self.unet = unet  # registered: checkpoint keys `unet.*`; VAE and text encoders move along, frozen
        self.vae = self.spec.vae
        for i, te in enumerate(self.spec.text_encoders):
            setattr(self, "text_encoder" if i == 0 else f"text_encoder_{i + 1}", te)
        self.last_restoration: dict | None = None
        self._loss_window: list[float] = []  # the last 50 training losses (the model card's final loss)
        self.wall_time = 0.0  # seconds of training (checkpointed, so a resumed run keeps counting)
        self._t0: float | None = None

    # -- conditioning ------------------------------------------------------------------------------
    def conditioning(self, batch):
        px = batch["pixel_values"]
        b, _, h, w = px.shape
        cond = self.spec.encode_prompt(list(batch["caption"]), grad=True, size=(h, w)).detach().to(self.device)
        if "time_ids" in self.spec.cond_keys:  # SDXL: per item (original size, crop top-left, target size)
            ids = [self.spec.time_ids(h, w, 1, tuple(int(v) for v in batch["original_size"][i]),
                                      tuple(int(v) for v in batch["crop_top_left"][i])) for i in range(b)]
            cond = cond.with_(time_ids=torch.cat(ids).to(self.device, cond["time_ids"].dtype))
        concat = condition_latents(self.spec, self.task, low_res=batch.get("low_res"), pixels=px,
                                   mask=batch.get("mask"), scale=self.scale, size=(h, w))
        return cond.with_(concat_latents=concat.float())

    def training_step(self, batch, batch_idx):
        px = batch["pixel_values"]
        z0 = self.spec.encode(px[:, :, None].to(self.spec.vae.dtype if self.spec.vae is not None else px.dtype)).float()
        cond = self.conditioning(batch)
        diff, aux = self.diffusion_loss(z0, cond)
        plain = diff.detach()  # the unweighted MSE of the target (the model card's final loss)
        if self.hparams.loss_weighting != "none":
            diff = self.weighted_loss(aux)
            self.log("train/target_mse", plain, on_step=True, batch_size=px.shape[0])
        terms = {"diffusion_loss": diff, **self.extra_loss(batch, aux)}
        loss = sum(terms.values())
        self.check_finite(loss, terms)
        self.log_terms(loss, terms, batch_size=px.shape[0])
        self._loss_window = (self._loss_window + [float(plain)])[-50:]
        return loss

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        """Per-item weight of the target's MSE at timesteps `t` (`loss_weighting`; the training base's
        `truncated_snr_weights`), in the ε-MSE's units."""
        return truncated_snr_weights(self.spec.scheduler, t, self.hparams.max_loss_weight)

    def weighted_loss(self, aux) -> torch.Tensor:
        """The target's MSE per item, weighted by `loss_weights`, averaged over the batch."""
        return weighted_mse(aux, self.loss_weights(aux.t))

    def on_train_start(self):
        self._t0 = time.time() - self.wall_time

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self._t0 is not None:
            self.wall_time = time.time() - self._t0

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["wall_time"] = self.wall_time

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.wall_time = float(checkpoint.get("wall_time", 0.0))

    def configure_optimizers(self):
        hp = self.hparams
        scale = float(hp.get("conv_in_lr_scale", 1.0))
        conv_in = {id(p) for p in self.unet.conv_in.parameters()} if scale != 1.0 else set()
        params = [p for p in self.unet.parameters() if p.requires_grad and id(p) not in conv_in]
        groups = [{"params": params, "lr": hp.lr, "name": "unet"}]
        if conv_in:
            groups.append({"params": [p for p in self.unet.conv_in.parameters() if p.requires_grad],
                           "lr": hp.lr * scale, "name": "conv_in"})
        return torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay, eps=hp.eps)

    # -- restoration (validation / predict) ---------------------------------------------------------
    def restore_batch(self, batch) -> dict:
        px = batch["pixel_values"].to(self.device)
        low, mask = batch.get("low_res"), batch.get("mask")
        was = self.unet.training
        self.unet.eval()
        try:
            with self.inference_adapters():
                out = restore(self.spec, self.task, list(batch["caption"]), low_res=low, pixels=px, mask=mask,
                              scale=self.scale, noise=self.noise_kind, gp=self.gp_cfg,
                              num_inference_steps=self.restore_cfg.num_inference_steps,
                              guidance_scale=self.restore_cfg.guidance_scale, seed=self.noise_seed)
        finally:
            self.unet.train(was)
        base = baseline(self.task, low_res=None if low is None else low.to(self.device), pixels=px,
                        mask=None if mask is None else mask.to(self.device), scale=self.scale)
        region = None if mask is None else (mask.to(self.device) > 0.5)
        res = {"input": (upsample(low.to(self.device), self.scale)[:, :, 0] if low is not None else base),
               "restored": out, "target": px, "baseline": base, "mask": mask,
               "psnr": region_psnr(out, px, region), "psnr_baseline": region_psnr(base, px, region)}
        self.last_restoration = res
        return res

    def validation_step(self, batch, batch_idx):
        res = self.restore_batch(batch)
        n = batch["pixel_values"].shape[0]
        self.log("val/psnr", res["psnr"].mean(), batch_size=n)
        self.log("val/psnr_baseline", res["psnr_baseline"].mean(), batch_size=n)
        return res

    def predict_step(self, batch, batch_idx):
        return self.restore_batch(batch)

    def configure_callbacks(self):
        from modules.callbacks.restoration import RestorationWriter

        return [RestorationWriter()]

    # -- export --------------------------------------------------------------------------------------
    def export_formats(self) -> list[str]:
        return ["diffusers-model"]

    def model_card_fields(self) -> dict:
        g = self.gp_cfg
        fields = {"task": self.task, "noise": self.noise_kind,
                  "concat_channels": concat_channels(self.spec, self.task),
                  "channel_order": ("noisy latent, upsampled low-res latent" if self.task == "super_resolution"
                                    else "noisy latent, mask (1 = regenerate), masked-image latent")}
        if self.task == "super_resolution":
            fields["scale"] = self.scale
        fields["loss_weighting"] = self.hparams.loss_weighting
        if self.hparams.max_loss_weight is not None:
            fields["max_loss_weight"] = self.hparams.max_loss_weight
        if self.noise_kind == "gp":
            fields.update({"gp_features": g.features,
                           "gp_lengthscale": g.lengthscale if g.lengthscale is not None else "2/(pi*R), R = latent side",
                           "gp_truncation": f"{g.truncation} sigma per coordinate"})
            if g.lengthscale is None and self._trainer is not None:
                dm = getattr(self.trainer, "datamodule", None)
                size = getattr(getattr(dm, "hparams", None), "size", None)
                if size:
                    r = size // self.spec.vae_scale_factor
                    fields["gp_lengthscale_at_training_size"] = f"{default_lengthscale(r):.6g} (R = {r})"
        fields["training_steps"] = int(self.global_step) if self._trainer is not None else 0
        if self._loss_window:
            fields["final_loss"] = round(sum(self._loss_window) / len(self._loss_window), 5)
            fields["final_loss_steps"] = len(self._loss_window)
        if self.wall_time:
            fields["training_time_s"] = round(self.wall_time, 1)
        return fields


# -- packaged conditional worlds (presets `tiny-world-inpaint`, `tiny-world-sr`) -------------------
def package_world(export, out, base: str = "tiny-world", name: str | None = None, recipe: str | None = None,
                  dtype: torch.dtype = torch.float16, extra: dict | None = None):
    """Write a GP fine-tuning export of a pixel-space world as a whole diffusers pipeline folder that
    `load_model` reads (`unet/` in `dtype`, the base's `text_encoder/`, `tokenizer/`, `scheduler/`,
    `model_index.json`), plus the export's `export.json` (with `extra` merged in: final loss,
    training time, ...) and a `README.md` model card. `load_finetuned(folder_or_preset)` gives
    `(spec, card)` back."""
    import json
    import shutil
    from pathlib import Path

    from diffusers import UNet2DConditionModel

    from modules.io_utils import atomic_directory
    from modules.models.spec import resolve_model_path

    export, out = Path(export), Path(out)
    card = json.loads((export / "export.json").read_text())
    if card.get("method") != GPFinetuneModule.method:
        raise ValueError(f"{export} is not a GP fine-tuning export (export.json method {card.get('method')!r})")
    src = resolve_model_path(base)
    index = json.loads((src / "model_index.json").read_text())
    if index.get("vae", [None])[0] is not None:
        raise ValueError(f"package_world packs pixel-space worlds; {base} has a VAE")
    card.update(extra or {})
    name = name or out.name
    card["preset"], card["recipe"] = name, recipe or card.get("recipe")
    unet = UNet2DConditionModel.from_pretrained(export, subfolder="unet", torch_dtype=torch.float32).to(dtype)
    with atomic_directory(out) as tmp:
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        for part in ("text_encoder", "tokenizer", "scheduler"):
            shutil.copytree(src / part, tmp / part)
        index["_name_or_path"] = name
        index["training"] = {k: card.get(k) for k in ("task", "noise", "training_steps", "final_loss",
                                                        "training_time_s", "recipe", "base_model")}
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        (tmp / "export.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
        size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
        (tmp / "README.md").write_text(_world_card(card, name, base, size, sum(p.numel() for p in unet.parameters()), dtype))
    return out


def _world_card(card: dict, name: str, base: str, size: int, params: int, dtype: torch.dtype) -> str:
    task = card["task"]
    what = (f"×{card.get('scale')} super-resolution ({32 // int(card.get('scale', 4))}² → 32²)" if task == "super_resolution"
            else "inpainting (mask 1 = regenerate)")
    gp = (f"GP noise: J = {card.get('gp_features')}, ℓ = {card.get('gp_lengthscale')} "
          f"({card.get('gp_lengthscale_at_training_size')} at the training size), truncation {card.get('gp_truncation')}"
          if card.get("noise") == "gp" else "white noise")
    loss = card.get("final_loss")
    t = card.get("training_time_s")
    weighting = card.get("loss_weighting", "none")
    if weighting == "truncated_snr":
        weighting += " (ε-MSE × max(1, 1/SNR(t))" + (f", capped at {card['max_loss_weight']}" if card.get("max_loss_weight") else "") + ")"
    return f"""# {name}

The tiny pixel-space world (`{base}`, 32×32 RGB in [-1, 1]) fine-tuned for {what} on random
crops of the eight photographs, on CPU (METHODS.md §3, docs/gp.md). `conv_in` widened
{card.get('in_channels') - card.get('concat_channels')} → {card.get('in_channels')} channels ({card.get('channel_order')}) with zero weights for the new ones.

```python
from modules.gp_finetune import load_finetuned, restore
spec, card = load_finetuned("{name}")
```

- task: {task}{f", scale ×{card.get('scale')}" if task == "super_resolution" else ""}
- training noise: {card.get('noise')} ({gp})
- recipe: `python -m train fit -c {card.get('recipe')}`
- steps: {card.get('training_steps')} (batch {card.get('batch_size', 16)}); loss weighting: {weighting}
- final loss (unweighted ε-MSE{f", {card['final_loss_note']}" if card.get('final_loss_note') else ""}): {'n/a' if loss is None else f'{loss:.4f}'}
- training time: {'n/a' if t is None else f'{t / 60:.1f} min'}{f" ({card['training_time_note']})" if card.get('training_time_note') else ""}
- UNet: {params / 1e6:.2f} M parameters, saved as {str(dtype).replace('torch.', '')} (the loader gives fp32)
- folder size: {size / 1e6:.1f} MB

Restoration quality on held-out crops: `assets/results/gp_world_claims.json`, `docs/gp.md`.
"""
