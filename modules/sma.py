"""SMA (spectral motion alignment, ../shared/METHODS.md §2) on two motion-tuning hosts, one clip each:

- `VMCModule`: only q/k/v of the temporal attention layers train, on VMC's loss ℓ_align (cosine along
  time of the residuals of ε̂ and ε);
- `MotionDirectorModule`: dual-path LoRA as two named peft adapters, `spatial` and `temporal`, two
  optimisers stepped by hand: a single-frame spatial step with probability 0.8, and every iteration a
  temporal step on the clip with the appearance-debiased loss; inference with the temporal LoRA only.

`sma: true` adds λg·ℓ_global + λl·ℓ_local on the motion vectors of the Tweedie x̂0 against the clean
latents (and, for MotionDirector, ℓ_align too); `sma: false` is the host's own method. Both hosts run
on the `unet3d` family (Zeroscope v2 / ModelScope, `tiny-unet3d`) and on SD's inflated video UNet
(`sd`, temporal attention `<block>.temporal.attn_temp`). Validation/predict transfer the motion:
they sample each edit prompt from noise (optionally mixed with the DDIM-inverted clip, `noise_prior`).
"""
from __future__ import annotations

import contextlib
import json
import math
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from modules.editing import EditConfig, EditResult, edit_clip, generate
from modules.losses.sma import align_loss, global_loss, local_loss, motion_vectors, spectrum
from modules.models.spec import ModelFamilyError, load_model
from modules.models.video_unet import FrameAttention
from modules.sampling import LoopState, Prediction
from modules.video_tuning import VideoTuningModule

FAMILIES = ("unet3d", "sd")
BaseDtype = Literal["float32", "bfloat16", "float16"]


@dataclass
class SpectralConfig:
    """SMA's knobs.

    Args:
        lambda_global: λg of ℓ_global (paper 0.4; recommended 0.2–0.5).
        lambda_local: λl of ℓ_local (paper 0.2; recommended 0.1–0.3).
        levels: Haar DWT levels of ℓ_global (null: the deepest PyWavelets allows, 2 for 8 frames, 3 for 16).
        delta: δ of ℓ_local's low-frequency weighting ω(a, b) (paper 0.05).
        abs_residual: motion vectors as |Δ| (released code) or signed Δ.
    """

    lambda_global: float = 0.4
    lambda_local: float = 0.2
    levels: int | None = None
    delta: float = 0.05
    abs_residual: bool = True


def radial_average(amp: torch.Tensor) -> torch.Tensor:
    """Mean of an fftshifted (H, W) map over rings of integer distance from the zero frequency."""
    h, w = amp.shape
    a = torch.arange(h).view(-1, 1) - h // 2
    b = torch.arange(w).view(1, -1) - w // 2
    r = (a.double() ** 2 + b.double() ** 2).sqrt().round().long().flatten()
    total = torch.zeros(int(r.max()) + 1, dtype=torch.float64).index_add_(0, r, amp.flatten().double())
    return (total / torch.bincount(r).double()).float()


class MotionTuningModule(VideoTuningModule):
    """What both hosts share: the family check, the frozen base, the SMA terms, motion transfer."""

    def __init__(self, model: str, sma: bool, spectral: SpectralConfig | None, frame_attention: str,
                 gradient_checkpointing: bool, base_dtype: str, noise_prior: float, seed: int,
                 edit: EditConfig | None, grad_clip: float | None):
        super().__init__(seed=seed, edit=edit, grad_clip=grad_clip)
        if not 0.0 <= noise_prior <= 1.0:
            raise ValueError(f"model.noise_prior must be in [0, 1] (0: plain noise; released MotionDirector 0.1–0.5), got {noise_prior}")
        self.sma = sma
        self.spectral = spectral or SpectralConfig()
        self.noise_prior = noise_prior
        self.spec = load_model(model, dtype=getattr(torch, base_dtype))
        if self.spec.family not in FAMILIES:
            raise ModelFamilyError(
                f"model.model '{model}' is a '{self.spec.family}' model; {type(self).__name__} tunes the temporal layers "
                f"of a text-to-video UNet (families {FAMILIES}): a UNet3D folder (Zeroscope v2, ModelScope; preset "
                "tiny-unet3d) or an SD 1.x folder, inflated with temporal attention (preset tiny-sd)."
            )
        self.base_checksum = self.spec.checksum()
        if self.spec.family == "sd":
            self.spec.inflate(frame_attention, temporal=True)
        self.video_unet = self.spec.model
        self.video_unet.requires_grad_(False)
        self.text_encoder = self.spec.text_encoders[0]
        self.vae = self.spec.vae
        if gradient_checkpointing:
            self.video_unet.enable_gradient_checkpointing()
        self.adopt_noise_prior()

    def adopt_noise_prior(self) -> None:
        """Tune and sample with the noise prior the base was trained on, as its `model_index.json`
        records it (the tiny video world: frame-correlated "mixed" noise); white noise otherwise."""
        from modules.video_world import MixedNoise, mix_frames, noise_callbacks

        prior = [c for c in noise_callbacks(self.spec) if isinstance(c, MixedNoise)]
        if prior:
            rho = prior[0].rho
            self.noise_sampler = lambda shape, generator, device=None: mix_frames(
                torch.randn(shape, generator=generator), rho).to(device)
            self.sampling_callbacks.extend(prior)

    # -- where the temporal layers are -------------------------------------------------------------
    def linear_layers(self, where: Literal["spatial", "temporal"], parts: tuple[str, ...] | None = None,
                      input_transformer: bool = True) -> list[str]:
        """Names (in `spec.network`) of the nn.Linear layers of the spatial or the temporal transformers;
        `parts`: only those under `.attn1.`, `.attn2.`, `.ff.`...; `input_transformer`: include unet3d's
        `transformer_in` (a temporal transformer)."""
        from diffusers.models.transformers.transformer_2d import Transformer2DModel
        from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel

        net = self.spec.network
        owners = []
        for name, m in net.named_modules():
            if self.spec.family == "sd":
                temporal = ".temporal." in f".{name}."
                if isinstance(m, nn.Linear) and temporal == (where == "temporal") and (temporal or ".attentions." in name):
                    owners.append(name)
                continue
            cls = TransformerTemporalModel if where == "temporal" else Transformer2DModel
            if isinstance(m, cls) and (input_transformer or name != "transformer_in"):
                owners += [f"{name}.{n}" for n, c in m.named_modules() if isinstance(c, nn.Linear)]
        if parts is not None:
            owners = [n for n in owners if any(f".{p}." in f"{n}." for p in parts)]
        return owners

    # -- the SMA terms -----------------------------------------------------------------------------
    def motion_terms(self, aux, align: bool) -> dict[str, torch.Tensor]:
        """Unweighted terms on the step's prediction: `align` (ε residuals), `global`, `local` (x̂0
        residuals against the clean latents' residuals)."""
        cfg = self.spectral
        terms = {}
        if align:
            terms["align"] = align_loss(motion_vectors(aux.pred.eps, cfg.abs_residual),
                                        motion_vectors(aux.noise, cfg.abs_residual))
        pred, true = motion_vectors(aux.pred.x0, cfg.abs_residual), motion_vectors(aux.z0, cfg.abs_residual)
        terms["global"] = global_loss(pred, true, cfg.levels)
        terms["local"] = local_loss(pred, true, cfg.delta)
        return terms

    def weighted(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        w = {"align": 1.0, "global": self.spectral.lambda_global, "local": self.spectral.lambda_local}
        return sum(w[k] * v for k, v in terms.items())

    def sma_or_monitor(self, aux, align: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the SMA part of the loss, every term for the log): with `sma: false` the spectral terms are
        computed without a graph, logged only."""
        if self.sma:
            terms = self.motion_terms(aux, align)
            return self.weighted(terms), terms
        with torch.no_grad():
            return torch.zeros((), device=aux.z0.device), self.motion_terms(aux, align)

    @torch.no_grad()
    def motion_spectra(self, batch, t_fraction: float = 0.5) -> dict[str, torch.Tensor]:
        """Amplitude spectra (fftshifted, averaged over batch, channels and residual frames) of the clean
        clip's motion vectors and of the tuned model's x̂0 at one timestep (`t_fraction` of the schedule,
        fixed noise from the seed), with their radial averages: what ℓ_local compares."""
        z0 = self.latents(batch)
        size = tuple(batch["pixel_values"].shape[-2:]) if "pixel_values" in batch else None
        cond = self.conditioning(batch["prompt"], size)
        sch = self.spec.scheduler
        t = torch.full((z0.shape[0],), int(t_fraction * (sch.config.num_train_timesteps - 1)), device=z0.device)
        a = sch.alphas_cumprod.to(z0.device, torch.float64)[t].view(-1, 1, 1, 1, 1)
        noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(self.noise_seed)).to(z0)
        zt = (a.sqrt() * z0.double() + (1 - a).sqrt() * noise.double()).to(z0.dtype)
        was_training = self.video_unet.training
        self.video_unet.eval()
        try:
            with self.inference_adapters():
                out = self.spec(zt, t, cond)
        finally:
            self.video_unet.train(was_training)
        pred = Prediction(out, zt, float(a.flatten()[0]), sch.config.prediction_type).x0
        res = {}
        for name, x in (("true", z0), ("pred", pred)):
            amp = spectrum(motion_vectors(x, self.spectral.abs_residual))[0].mean(dim=(0, 1, 2)).cpu()
            res[name], res[f"radial_{name}"] = amp, radial_average(amp)
        return res

    def configure_callbacks(self):
        from modules.callbacks.motion_spectra import MotionSpectraPlot

        return [*super().configure_callbacks(), MotionSpectraPlot()]

    # -- motion transfer (validation / predict) ----------------------------------------------------
    def edit_batch(self, batch, prompts: list[str] | None = None) -> EditResult:
        """Sample every edit prompt from noise with the tuned model; with `noise_prior` p > 0 the
        initial noise is √p·z_T(inverted clip) + √(1−p)·ε (released MotionDirector); the inversion and,
        if `edit.reconstruct`, the reconstruction of the clip come along."""
        from modules.video_world import MixedNoise, mix_frames

        cfg = self.edit_cfg
        prompts = list(cfg.edit_prompts if prompts is None else prompts)
        px = batch["pixel_values"][:1].to(self.device)
        _, _, f, h, w = px.shape
        was_training = self.video_unet.training
        self.video_unet.eval()
        try:
            with self.inference_adapters():
                if cfg.reconstruct or self.noise_prior > 0:
                    res = edit_clip(self.spec, px, batch["prompt"][0], EditConfig(**{**cfg.__dict__, "edit_prompts": []}),
                                    self.sampling_callbacks, progress=True)
                else:
                    res = EditResult(px, None, {}, LoopState("invert", []), batch["prompt"][0])
                g = torch.Generator().manual_seed(self.noise_seed)
                callbacks = self.sampling_callbacks
                for prompt in prompts:
                    noise = torch.randn((1, *self.spec.latent_shape(f, h, w)), generator=g)
                    if self.noise_prior > 0:
                        # the base's noise prior shapes the fresh noise only: z_T of the clip is mixed in as inverted
                        callbacks = [c for c in self.sampling_callbacks if not isinstance(c, MixedNoise)]
                        for c in self.sampling_callbacks:
                            if isinstance(c, MixedNoise):
                                noise = mix_frames(noise, c.rho)
                        zT = res.inversion.z.detach().float().cpu()
                        noise = math.sqrt(self.noise_prior) * zT + math.sqrt(1 - self.noise_prior) * noise
                    res.edits[prompt] = generate(self.spec, [prompt], f, h, w, cfg.num_inference_steps, cfg.guidance_scale,
                                                 callbacks=callbacks, noise=noise, progress=True)
        finally:
            self.video_unet.train(was_training)
        self.last_edit = res
        return res

    def model_card_fields(self) -> dict:
        return {"sma": self.sma, **{f"sma_{k}": v for k, v in self.spectral.__dict__.items()}}


class VMCModule(MotionTuningModule):
    def __init__(self, model: str = "tiny-unet3d", sma: bool = True, spectral: SpectralConfig | None = None,
                 lr: float = 1e-4, weight_decay: float = 1e-2, grad_clip: float | None = 1.0,
                 frame_attention: FrameAttention = "first", gradient_checkpointing: bool = False,
                 base_dtype: BaseDtype = "float32", noise_prior: float = 0.0, seed: int = 0,
                 edit: EditConfig | None = None):
        """
        Args:
            model: local diffusers folder (a UNet3D text-to-video model such as Zeroscope v2, or SD 1.x,
                inflated) or a preset (`tiny-unet3d`, `tiny-sd`).
            sma: add SMA's λg·ℓ_global + λl·ℓ_local to VMC's ℓ_align (false: plain VMC).
            spectral: SMA's weights and transforms.
            lr: AdamW learning rate (VMC 1e-4; constant schedule).
            weight_decay: AdamW weight decay (VMC 1e-2).
            grad_clip: gradient-norm clipping (VMC 1.0); a module setting, not the trainer's.
            frame_attention: keys/values of the spatial self-attention of an inflated SD UNet (`sd` only).
            gradient_checkpointing: recompute activations in the backward pass (memory for time).
            base_dtype: dtype of the frozen base (`bfloat16` with precision bf16-mixed on GPUs); the
                trained q/k/v are fp32.
            noise_prior: motion transfer starts from √p·(inverted clip) + √(1−p)·noise (0: noise only).
            seed: seeds the per-iteration noise and timesteps (and the motion-transfer noise).
            edit: sampling settings and `edit_prompts` (the new appearances) of validation/predict.
        """
        super().__init__(model, sma, spectral, frame_attention, gradient_checkpointing, base_dtype, noise_prior,
                         seed, edit, grad_clip)
        self.save_hyperparameters()
        mods = dict(self.spec.network.named_modules())
        for name in self.trained_layers():
            mods[name].float().requires_grad_(True)

    def trained_layers(self) -> list[str]:
        """unet3d: to_q/to_k/to_v of every attention of the temporal transformers `temp_attentions`
        (released VMC; `transformer_in` stays frozen). sd: those of `temporal.attn_temp` and its output
        projection, which inflation zero-initialises: with it frozen at 0 no gradient reaches q/k/v."""
        names = self.linear_layers("temporal", input_transformer=False)
        qkv = [n for n in names if n.endswith((".to_q", ".to_k", ".to_v"))]
        if self.spec.family == "sd":
            return qkv + [n for n in names if n.endswith(".to_out.0")]
        return qkv

    @property
    def method(self) -> str:
        return "vmc+sma" if self.sma else "vmc"

    def training_step(self, batch, batch_idx):
        """VMC's loss is ℓ_align alone (the diffusion MSE is logged, not optimised), plus SMA's terms."""
        z0 = self.latents(batch)
        size = tuple(batch["pixel_values"].shape[-2:]) if "pixel_values" in batch else None
        diff, aux = self.diffusion_loss(z0, self.conditioning(batch["prompt"], size))
        terms = {"align": align_loss(motion_vectors(aux.pred.eps, self.spectral.abs_residual),
                                     motion_vectors(aux.noise, self.spectral.abs_residual))}
        extra, spectral_terms = self.sma_or_monitor(aux, align=False)
        loss = terms["align"] + extra
        terms.update(spectral_terms)
        self.check_finite(loss, terms)
        self.log_terms(loss, {**terms, "diffusion_mse": diff.detach()}, batch_size=z0.shape[0])
        return loss

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def export_formats(self) -> list[str]:
        return ["named-tensors"]


class MotionDirectorModule(MotionTuningModule):
    lora_adapter_name = "temporal"  # what the `diffusers-lora` export writes (inference uses it alone)

    def __init__(self, model: str = "tiny-unet3d", sma: bool = True, spectral: SpectralConfig | None = None,
                 rank: int = 32, lora_dropout: float = 0.1, lora_targets: Literal["released", "paper"] = "released",
                 spatial_prob: float = 0.8, lr_spatial: float = 5e-4, lr_temporal: float = 5e-4,
                 weight_decay: float = 1e-2, grad_clip: float | None = None, frame_attention: FrameAttention = "first",
                 gradient_checkpointing: bool = False, base_dtype: BaseDtype = "float32", noise_prior: float = 0.0,
                 seed: int = 0, edit: EditConfig | None = None):
        """
        Args:
            model: local diffusers folder (UNet3D text-to-video or SD 1.x, inflated) or a preset.
            sma: add SMA's ℓ_align + λg·ℓ_global + λl·ℓ_local to the temporal loss (false: plain MotionDirector).
            spectral: SMA's weights and transforms.
            rank: LoRA rank of both adapters (lora_alpha = rank: scale 1, as released).
            lora_dropout: dropout on the LoRA input (released 0.1).
            lora_targets: `released`: every Linear of the spatial transformers and of the temporal ones
                (`transformer_in` and cross-attention included), and on the iterations without a spatial
                step the spatial LoRA is off during the temporal pass; `paper`: spatial attn1 + ff, temporal
                attn1 + attn2 + ff of `temp_attentions`, the spatial LoRA always on (frozen) in the temporal pass.
            spatial_prob: probability of the single-frame spatial step in an iteration (released 0.8).
            lr_spatial: AdamW learning rate of the spatial LoRA (5e-4).
            lr_temporal: AdamW learning rate of the temporal LoRA (5e-4).
            weight_decay: AdamW weight decay of both (released 1e-2).
            grad_clip: gradient-norm clipping of each optimiser step (released: none). The trainer's
                gradient_clip_val cannot be used: this module steps its optimisers itself.
            frame_attention: spatial self-attention keys/values of an inflated SD UNet (`sd` only).
            gradient_checkpointing: recompute activations in the backward pass (memory for time).
            base_dtype: dtype of the frozen base; LoRA tensors are fp32.
            noise_prior: motion transfer starts from √p·(inverted clip) + √(1−p)·noise (released 0.1–0.5).
            seed: seeds noise, timesteps, the spatial coin, frame and anchor (with the iteration), and dropout.
            edit: sampling settings and `edit_prompts` of validation/predict.
        """
        super().__init__(model, sma, spectral, frame_attention, gradient_checkpointing, base_dtype, noise_prior,
                         seed, edit, grad_clip)
        if not 0.0 <= spatial_prob <= 1.0:
            raise ValueError(f"model.spatial_prob must be in [0, 1] (released 0.8), got {spatial_prob}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        from peft import LoraConfig, inject_adapter_in_model

        paper = lora_targets == "paper"
        targets = {
            "spatial": self.linear_layers("spatial", ("attn1", "ff") if paper else None),
            "temporal": self.linear_layers("temporal", ("attn1", "attn2", "ff", "attn_temp") if paper else None,
                                           input_transformer=not paper),
        }
        net = self.spec.network
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():  # lora_A's init from the module's seed
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")  # two adapters: intended
            torch.manual_seed(seed)
            for name, modules in targets.items():
                cfg = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=lora_dropout, target_modules=modules)
                inject_adapter_in_model(cfg, net, adapter_name=name)
        self.lora_params: dict[str, list[nn.Parameter]] = {k: [] for k in targets}
        for n, p in net.named_parameters():
            for name in targets:
                if f".lora_A.{name}." in n or f".lora_B.{name}." in n:
                    p.data = p.data.float()
                    p.requires_grad_(True)
                    self.lora_params[name].append(p)
        self._lora_layers = {name: [m for m in net.modules() if hasattr(m, "lora_A") and name in m.lora_A]
                             for name in targets}
        for layers in self._lora_layers.values():  # peft made the last injected adapter the active one everywhere
            for m in layers:
                m.set_adapter(list(targets))  # a layer runs the one of them it has
        for ps in self.lora_params.values():
            for p in ps:
                p.requires_grad_(True)
        self._lora_dropouts = [m.lora_dropout[name] for name, layers in self._lora_layers.items() for m in layers]

    @property
    def method(self) -> str:
        return "motiondirector+sma" if self.sma else "motiondirector"

    # -- which adapter runs, which trains ----------------------------------------------------------
    @contextlib.contextmanager
    def adapters(self, **modes: Literal["train", "frozen", "off"]):
        """Per adapter: `train` (on, gradients), `frozen` (on, no gradients) or `off`; restored after."""
        saved = {name: [p.requires_grad for p in ps] for name, ps in self.lora_params.items()}
        try:
            for name, mode in modes.items():
                for m in self._lora_layers[name]:
                    m.enable_adapters(mode != "off")  # peft's switch (it also sets requires_grad: set below)
                for p in self.lora_params[name]:
                    p.requires_grad_(mode == "train")
            yield
        finally:
            for name, ps in self.lora_params.items():
                for m in self._lora_layers[name]:
                    m.enable_adapters(True)
                for p, rg in zip(ps, saved[name]):
                    p.requires_grad_(rg)

    @contextlib.contextmanager
    def inference_adapters(self):
        """Motion transfer samples with the temporal LoRA only (MotionDirector's inference)."""
        with self.adapters(spatial="off", temporal="frozen"):
            yield

    @contextlib.contextmanager
    def _dropout_rng(self):
        """LoRA dropout drawn from a generator keyed on (seed, iteration): resuming replays it."""
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=self.generator("dropout"))))
            yield

    # -- training ----------------------------------------------------------------------------------
    def configure_callbacks(self):
        if self.trainer.gradient_clip_val:
            raise ValueError(
                f"trainer.gradient_clip_val is {self.trainer.gradient_clip_val}, but MotionDirector steps its two "
                "optimisers itself (manual optimisation), where Lightning cannot clip: remove trainer.gradient_clip_val "
                "from the recipe and set model.init_args.grad_clip instead."
            )
        return super().configure_callbacks()

    def debiased_loss(self, aux) -> torch.Tensor:
        """MSE(√2·ε̂ − ε̂_a, √2·ε − ε_a), ε_a the anchor frame broadcast over frames (in the model's
        own parameterisation, as released)."""
        a = int(torch.randint(aux.output.shape[2], (1,), generator=self.generator("anchor_frame")))
        out, tgt = aux.output.float(), aux.target.float()
        return F.mse_loss(math.sqrt(2) * out - out[:, :, a:a + 1], math.sqrt(2) * tgt - tgt[:, :, a:a + 1])

    def training_step(self, batch, batch_idx):
        """Temporal pass first, then the spatial pass: the temporal loss sees the spatial LoRA before
        its update and the spatial pass runs without the temporal LoRA, which is what the released
        code computes (both forwards, then both steps), without holding two graphs."""
        opt_spatial, opt_temporal = self.optimizers()
        z0 = self.latents(batch)
        size = tuple(batch["pixel_values"].shape[-2:]) if "pixel_values" in batch else None
        cond = self.conditioning(batch["prompt"], size)
        spatial_step = float(torch.rand((), generator=self.generator("spatial_coin"))) < self.hparams.spatial_prob
        spatial_in_temporal = "frozen" if spatial_step or self.hparams.lora_targets == "paper" else "off"
        with self._dropout_rng():
            with self.adapters(spatial=spatial_in_temporal, temporal="train"):
                diff, aux = self.diffusion_loss(z0, cond)
                terms = {"temporal_mse": diff, "appearance_debiased": self.debiased_loss(aux)}
                extra, sma_terms = self.sma_or_monitor(aux, align=True)
                loss = terms["temporal_mse"] + terms["appearance_debiased"] + extra
                terms.update(sma_terms)
                self.check_finite(loss, terms)
                self.clip_and_step(opt_temporal, loss)
            if spatial_step:
                with self.adapters(spatial="train", temporal="off"):
                    i = int(torch.randint(z0.shape[2], (1,), generator=self.generator("spatial_frame")))
                    out = self.spec(aux.zt[:, :, i:i + 1], aux.t, cond)
                    terms["spatial_mse"] = F.mse_loss(out.float(), aux.target[:, :, i:i + 1].float())
                    self.clip_and_step(opt_spatial, terms["spatial_mse"])
            else:  # a step without gradients changes nothing; it keeps global_step = 2 × iterations
                self.clip_and_step(opt_spatial)
        self.log_terms(loss, {k: v.detach() for k, v in terms.items()}, batch_size=z0.shape[0])
        self.log("train/spatial_step", float(spatial_step), on_step=True, batch_size=z0.shape[0])

    def configure_optimizers(self):
        hp = self.hparams
        return [torch.optim.AdamW(self.lora_params["spatial"], lr=hp.lr_spatial, weight_decay=hp.weight_decay),
                torch.optim.AdamW(self.lora_params["temporal"], lr=hp.lr_temporal, weight_decay=hp.weight_decay)]

    def export_formats(self) -> list[str]:
        """`<run>/export`: the temporal LoRA (diffusers format, what motion transfer loads);
        `<run>/export-diffusers-lora-spatial`: the spatial one; `<run>/export-kohya-lora`: the temporal
        one with kohya keys."""
        return ["diffusers-lora", "diffusers-lora-spatial", "kohya-lora"]


# -- exports beside the primary `diffusers-lora` (the temporal adapter) ------------------------------
from modules.adapters.formats import _card, _meta, register_format  # noqa: E402
from modules.io_utils import atomic_directory  # noqa: E402

KOHYA_FILE = "pytorch_lora_weights_kohya.safetensors"


@register_format("diffusers-lora-spatial")
def write_spatial_lora(module, out, step):
    """MotionDirector's spatial adapter (the appearance of the training clip) in the diffusers format."""
    from modules.adapters.diffusers_lora import save_diffusers_lora

    meta = {**_meta(module, "diffusers-lora", step), "adapter": "spatial"}
    with atomic_directory(out) as tmp:
        save_diffusers_lora(module.spec.network, module.spec.family, tmp, meta, adapter_name="spatial")
        (tmp / "README.md").write_text(_card(meta, "The spatial LoRA (appearance of the training clip; motion "
                                                   "transfer does not use it): `pipe.load_lora_weights(folder)`."))
    return out


@register_format("kohya-lora")
def write_kohya_lora(module, out, step):
    """The `lora_adapter_name` adapter with kohya keys (`lora_unet_<path>.lora_down/.lora_up/.alpha`,
    diffusers' `convert_state_dict_to_kohya`), the key format ComfyUI / A1111-style tools read."""
    from diffusers.utils import convert_state_dict_to_kohya
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    adapter = getattr(module, "lora_adapter_name", "default")
    net = module.spec.network
    peft_state = get_peft_model_state_dict(net, adapter_name=adapter)
    state = convert_state_dict_to_kohya({f"unet.{k}": v.detach().float().contiguous().cpu() for k, v in peft_state.items()})
    alpha = float(net.peft_config[adapter].lora_alpha)
    state = {k: (torch.tensor(alpha) if k.endswith(".alpha") else v) for k, v in state.items()}
    meta = {**_meta(module, "kohya-lora", step), "adapter": adapter, "rank": int(net.peft_config[adapter].r),
            "lora_alpha": alpha}
    with atomic_directory(out) as tmp:
        save_file(state, str(tmp / KOHYA_FILE), metadata={k: str(v) for k, v in meta.items()})
        (tmp / "export.json").write_text(json.dumps(meta, indent=2, default=str))
        (tmp / "README.md").write_text(_card(meta, f"The {adapter} LoRA with kohya keys (`{KOHYA_FILE}`) for "
                                                   "ComfyUI / A1111-style loaders."))
    return out
