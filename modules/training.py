"""The base LightningModule of every trainable method.

What every method gets from it (and must not re-implement):

- **trainable-only checkpoints**: `state_dict` narrowed to tensors with `requires_grad`, checked by
  exact name set on load; the base model is refused by checksum (`base_checksum`);
- **seeded noise streams**: `generator(stream)` depends only on (seed, training iteration, rank,
  stream name). The iteration counter is the module's own (`train_iteration`, saved in the
  checkpoint), not `global_step`, which manual optimisation with two optimisers advances twice
  per iteration; named streams ("noise", "timesteps", "spatial_frame", ...) stay independent when a
  method draws more numbers;
- **a noise-sampler switch** (`noise: white | gp`, `NOISE_SAMPLERS`: `(shape, generator, device=None)`
  -> tensor; numbers come from the CPU generator, `device` is where a sampler may compute;
  `gp`: Gaussian-process noise, `modules/noise/gp.py`, one function per (batch, channel, frame));
- **the diffusion loss** on the family's denoiser: z_t = √ᾱ_t·z0 + √(1−ᾱ_t)·noise from the scheduler's
  own ᾱ (the DDPM/DDIM forward process; for σ-schedulers such as SDXL's Euler this is the scaled
  input `scale_model_input(z0 + σ·noise)` the network sees) and the scheduler's target,
  and `extra_loss(batch, aux)` seeing the prediction (`aux.pred`: ε̂ / x̂0 / v̂), noise, timesteps
  and noisy latents;
- **NaN guard** naming the last good checkpoint; **gradient clipping** as a module setting
  (`grad_clip`), also for manual optimisation (`clip_and_step`);
- **`inference_adapters()`**: the context validation/predict sample under (MotionDirector samples
  with its temporal LoRA only).
"""
from __future__ import annotations

import contextlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import lightning as L
import torch
import torch.nn.functional as F

from modules.noise.gp import gp_noise
from modules.sampling import Prediction

NoiseSampler = Callable[..., torch.Tensor]  # (shape, generator, device=None) -> tensor


def white_noise(shape: tuple, generator: torch.Generator, device=None) -> torch.Tensor:
    return torch.randn(shape, generator=generator)


NOISE_SAMPLERS: dict[str, NoiseSampler] = {"white": white_noise, "gp": gp_noise}


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class DiffusionAux:
    """What `extra_loss` sees of the diffusion step."""

    pred: Prediction  # the model output at (zt, t), as ε̂ / x̂0 / v̂ (differentiable)
    output: torch.Tensor
    target: torch.Tensor
    noise: torch.Tensor
    t: torch.Tensor
    zt: torch.Tensor
    z0: torch.Tensor


def _stream_key(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def truncated_snr_weights(scheduler, t: torch.Tensor, max_weight: float | None = None) -> torch.Tensor:
    """Per-item weights of the target's MSE at timesteps `t` that make the loss x0-MSE × max(SNR, 1):
    ε-MSE × max(1, 1/SNR) (ε-MSE = SNR·x0-MSE, so plain ε-MSE weighs an image error at t = 800 only
    ~0.04× and at t = 950 ~0.01× — the noise levels where a sample's layout is decided); converted for
    v- and x0-prediction targets so that the same x0 weighting results; capped at `max_weight`."""
    acp = scheduler.alphas_cumprod.to(t.device, torch.float64)[t]
    snr = acp / (1 - acp)
    w = torch.clamp(1 / snr, min=1.0)
    ptype = scheduler.config.prediction_type
    if ptype == "sample":  # x0-MSE·max(SNR, 1)
        w = torch.clamp(snr, min=1.0)
    elif ptype == "v_prediction":  # v-MSE = ε-MSE/ᾱ
        w = w * acp
    if max_weight is not None:
        w = w.clamp(max=float(max_weight))
    return w.float()


def weighted_mse(aux: "DiffusionAux", weights: torch.Tensor) -> torch.Tensor:
    """The target's MSE per item, weighted, averaged over the batch."""
    per_item = (aux.output.float() - aux.target.float()).pow(2).flatten(1).mean(1)
    return (weights.to(per_item.device) * per_item).mean()


class TrainingModule(L.LightningModule):
    """Subclasses set `self.spec` (a ModelSpec; its `model` is the network being adapted), mark
    their trainable tensors, and define `configure_optimizers` and `export`."""

    def __init__(self, seed: int = 0, noise: Literal["white", "gp"] = "white", grad_clip: float | None = 1.0):
        super().__init__()
        if noise not in NOISE_SAMPLERS:
            raise ValueError(f"model.noise must be one of {sorted(NOISE_SAMPLERS)}, got {noise!r}")
        self.noise_seed = seed
        self.noise_kind = noise
        self.noise_sampler: NoiseSampler = NOISE_SAMPLERS[noise]  # a method may set a configured one
        self.grad_clip = grad_clip
        self.train_iteration = 0  # iterations started (the current one included, inside training_step)
        self.strict_loading = False  # checkpoints hold trainable tensors only

    # -- randomness ----------------------------------------------------------------------------
    def generator(self, stream: str = "noise") -> torch.Generator:
        """Depends only on (seed, training iteration, rank, stream): resuming continues exactly."""
        g = torch.Generator(device="cpu")
        g.manual_seed((self.noise_seed * 1_000_003 + self.train_iteration * 101 + self.global_rank * 7919
                       + _stream_key(stream) * 31) % (2**63 - 1))
        return g

    def sample_noise(self, like: torch.Tensor, stream: str = "noise") -> torch.Tensor:
        return self.noise_sampler(tuple(like.shape), self.generator(stream), device=like.device).to(like)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # counted at the start, so a checkpoint written at the end of an iteration (callbacks run
        # before the module's own batch-end hook) holds the number of iterations done
        self.train_iteration += 1

    # -- the diffusion loss ----------------------------------------------------------------------
    def diffusion_loss(self, z0: torch.Tensor, cond, denoiser=None) -> tuple[torch.Tensor, DiffusionAux]:
        """MSE of the family's target (ε, v or x0 by the scheduler's `prediction_type`) at a random
        timestep, on noise from the configured sampler."""
        sch = self.spec.scheduler
        denoiser = denoiser or self.spec
        noise = self.sample_noise(z0)
        t = self.sample_timesteps(z0.shape[0], sch.config.num_train_timesteps).to(z0.device)
        # DDPMScheduler.add_noise / get_velocity's arithmetic (diffusers 0.42), not sch.add_noise: Euler's is
        # the unscaled z0 + σ·noise and fails once sampling has called set_timesteps on the shared scheduler
        a_t = sch.alphas_cumprod.to(device=z0.device, dtype=z0.dtype)[t].view(-1, *([1] * (z0.ndim - 1)))
        sa, sb = a_t**0.5, (1 - a_t) ** 0.5
        zt = sa * z0 + sb * noise
        ptype = sch.config.prediction_type
        target = {"epsilon": noise, "sample": z0}.get(ptype)
        if target is None:
            target = sa * noise - sb * z0
        out = denoiser(zt, t, cond)
        acp = sch.alphas_cumprod.to(zt.device, torch.float64)[t].view(-1, *([1] * (zt.ndim - 1)))
        pred = _BatchPrediction(out, zt, acp, ptype)
        loss = F.mse_loss(out.float(), target.float())
        return loss, DiffusionAux(pred, out, target, noise, t, zt, z0)

    def sample_timesteps(self, n: int, num_train_timesteps: int) -> torch.Tensor:
        """The training timesteps of a batch of `n` (uniform; a method may bias them)."""
        return torch.randint(0, num_train_timesteps, (n,), generator=self.generator("timesteps"))

    def extra_loss(self, batch, aux: DiffusionAux) -> dict[str, torch.Tensor]:
        """Method terms added to the diffusion loss (SAVE's regulariser, SMA's alignment losses)."""
        return {}

    def check_finite(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        if torch.isfinite(loss):
            return
        ckpt_dir = Path(self.trainer.default_root_dir) / "checkpoints"
        raise NonFiniteLossError(
            f"loss became {loss.item()} in training iteration {self.train_iteration} (step {self.global_step}) "
            f"({', '.join(f'{k}={v.item():.4g}' for k, v in terms.items())}); training stopped. "
            f"The last good checkpoint is in {ckpt_dir} (resume with --ckpt_path {ckpt_dir}/last.ckpt "
            "and a lower learning rate)."
        )

    def log_terms(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], batch_size: int = 1) -> None:
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, on_step=True, batch_size=batch_size)
        self.log("train/loss", loss.detach(), on_step=True, prog_bar=True, batch_size=batch_size)

    # -- gradient clipping (a module setting, automatic and manual optimisation alike) -----------
    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        val = gradient_clip_val if gradient_clip_val is not None else self.grad_clip
        if val:
            self.clip_gradients(optimizer, gradient_clip_val=val, gradient_clip_algorithm=gradient_clip_algorithm or "norm")

    def clip_and_step(self, optimizer, loss: torch.Tensor | None = None) -> None:
        """Manual optimisation: backward (when `loss` is given), clip by `grad_clip`, step, zero."""
        if loss is not None:
            self.manual_backward(loss)
        if self.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # -- inference -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def inference_adapters(self):
        """Adapters active while validation/predict sample (default: everything trained)."""
        yield

    # -- exports (one registry: modules/adapters/formats.py) --------------------------------------
    def export_formats(self) -> list[str]:
        """Formats this method exports; the first is `<run>/export`, others `<run>/export-<format>`."""
        return ["named-tensors"]

    def export(self, out_dir, step: int | None = None):
        """Write the primary export format into `out_dir` (replaced as one unit)."""
        from modules.adapters.formats import write_export

        if step is None and self._trainer is not None:
            step = self.global_step
        return write_export(self, out_dir, self.export_formats()[0], step)

    # -- checkpoints: trainable tensors only -------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = self.trainable_state()
        checkpoint["module_class"] = f"{type(self).__module__}.{type(self).__qualname__}"
        checkpoint["base_checksum"] = getattr(self, "base_checksum", None)
        checkpoint["train_iteration"] = self.train_iteration

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        theirs, ours = checkpoint.get("base_checksum"), getattr(self, "base_checksum", None)
        if theirs and ours and theirs != ours:
            raise ValueError(
                f"this checkpoint was trained on a base model with checksum {theirs}, but "
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
        self.train_iteration = int(checkpoint.get("train_iteration", checkpoint.get("global_step", 0)))


class _BatchPrediction(Prediction):
    """A Prediction whose ᾱ is a per-item tensor (training draws one timestep per item)."""

    def __init__(self, output, z, alpha_bar: torch.Tensor, prediction_type: str):
        super().__init__(output, z, 0.5, prediction_type)
        self.alpha_t = alpha_bar

    def _coef(self):
        return self.alpha_t.sqrt(), (1.0 - self.alpha_t).sqrt()
