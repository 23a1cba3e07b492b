"""STEM inversion as an inference callback: EM low-rank bases over the whole video's self-attention
tokens replace frame attention during DDIM inversion (and the reconstruction pass).

Use it in a recipe (`trainer.callbacks: - class_path: modules.callbacks.stem.STEMInversion`), in
`scripts/edit.py --inversion stem`, or directly: `edit_clip(..., callbacks=[STEMInversion()])`.
It composes with any trained model (e.g. a SAVE-tuned UNet): it only swaps the `attn1` processors
of the `VideoUNet` for the phases it covers and restores them afterwards.

Editing after inversion (METHODS.md §5): the edit is sampled with CFG through the attention chosen by
`edit_attention`: `"stem"` (default) keeps STEM attention in the edit pass, as in inversion, so
the edit starts from noise that was inverted through the same operator; `"model"` uses the model's
own (inflated) frame attention -- see the README's STEM section for the measurement that picked the
default. `feature_injection=True` adds **per-frame plug-and-play (PnP) injection** from the inverted
source trajectory: at each early sampling step the source latent of that step is run through the
model, and every frame's decoder ResNet features (first 80% of steps) and decoder self-attention
queries/keys (first 50%) are injected into the *same frame* of the edit. This is not TokenFlow:
TokenFlow edits keyframes jointly and propagates their features to the other frames by
nearest-neighbour correspondence; that propagation is not implemented here.
"""
from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from einops import rearrange

from modules.models.video_unet import FrameAttnProcessor, VideoContext, attention_heads, gather_frames
from modules.sampling import LoopState, SamplingCallback
from modules.stem import stem_attention


class STEMAttnProcessor:
    """Self-attention of every frame's queries onto K EM bases of all frames' keys/values."""

    def __init__(self, ctx: VideoContext, num_bases: int, tau: float, iters: int, chunk_frames: int | None,
                 generator: torch.Generator | None, max_attention_bytes: float, name: str = "",
                 pnp: "_PnPState | None" = None):
        self.ctx, self.K, self.tau, self.iters = ctx, num_bases, tau, iters
        self.chunk_frames, self.generator, self.max_bytes = chunk_frames, generator, max_attention_bytes
        self.name, self.pnp = name, pnp  # plug-and-play: record / inject this layer's queries and keys

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        f = self.ctx.num_frames
        x = hidden_states
        bf, n, c = x.shape
        h = attn.heads
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        if self.pnp is not None:
            q, k = self.pnp.exchange(self.name, q, k)
        chunk = min(self.chunk_frames or f, f)
        # Working memory of one group of frames: its q, k, v (fp32) + the EM's responsibility chunk
        # (em_bases processes tokens in chunks of at most 2**25 responsibilities).
        m = chunk * n * (bf // f)
        est = 3 * m * c * 4 + min(m * h * self.K, 2**25) * 4
        if est > self.max_bytes:
            raise MemoryError(
                f"STEM attention over {chunk} frames × {n} tokens would need ~{est / 2**30:.2f} GiB per layer "
                f"(limit {self.max_bytes / 2**30:.2f} GiB); set chunk_frames (e.g. chunk_frames=8, as in the "
                "released code) or raise max_attention_gib."
            )
        q, k, v = (rearrange(t, "(b f) n (h d) -> b h f n d", f=f, h=h) for t in (q, k, v))
        outs = []
        for s in range(0, f, chunk):  # groups of frames one after another: memory bounded by the group
            qs, ks, vs = (t[:, :, s:s + chunk].flatten(2, 3) for t in (q, k, v))
            o = stem_attention(qs, ks, vs, num_bases=self.K, tau=self.tau, iters=self.iters,
                               generator=self.generator)
            outs.append(rearrange(o, "b h (g n) d -> b g n (h d)", n=n))
        out = rearrange(torch.cat(outs, dim=1), "b f n e -> (b f) n e").to(q.dtype)
        return attn.to_out[1](attn.to_out[0](out))


class _PnPState:
    def __init__(self):
        self.mode = "off"  # off | record | inject
        self.features: dict[str, torch.Tensor] = {}

    def exchange(self, name: str, q: torch.Tensor, k: torch.Tensor):
        """Record this layer's (q, k) from the source pass, or return the recorded ones (repeated over
        the CFG batch) in the edit pass; frame n of the edit gets frame n's features (per-frame PnP)."""
        if self.mode == "record":
            self.features[name] = (q.detach(), k.detach())
        elif self.mode == "inject" and name in self.features:
            sq, sk = self.features[name]
            reps = q.shape[0] // sq.shape[0]
            q, k = sq.repeat(reps, 1, 1), sk.repeat(reps, 1, 1)
        return q, k


class PnPFrameAttnProcessor(FrameAttnProcessor):
    """Frame attention whose queries/keys can be recorded from the source pass and injected (per frame)."""

    def __init__(self, ctx, mode, name, pnp: _PnPState):
        super().__init__(ctx, mode)
        self.name, self.pnp = name, pnp

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        x = hidden_states
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        q, k = self.pnp.exchange(self.name, q, k)
        f = self.ctx.num_frames
        return attention_heads(attn, q, gather_frames(k, f, self.mode), gather_frames(v, f, self.mode))


EditAttention = Literal["stem", "model"]
EDIT_ATTENTION = ("stem", "model")


class STEMInversion(L.Callback, SamplingCallback):
    def __init__(self, num_bases: int = 256, tau: float = 0.01, iters: int = 5, chunk_frames: int | None = None,
                 during_reconstruction: bool = True, edit_attention: EditAttention = "stem",
                 feature_injection: bool = False, resnet_injection: float = 0.8, attention_injection: float = 0.5,
                 seed: int = 0, max_attention_gib: float = 8.0):
        """
        Args:
            num_bases: K bases per head (paper Table 1: 128/256/512).
            tau: E-step temperature (released code 0.01; paper 0.05). Must be > 0.
            iters: EM iterations R (released code 5; paper 3).
            chunk_frames: bases per chunk of this many frames (released code: 8); None = all frames.
            during_reconstruction: also use STEM attention for the CFG-1 reconstruction pass.
            edit_attention: self-attention of the edit pass: "stem" (STEM attention, as in inversion)
                or "model" (the model's own frame attention).
            feature_injection: per-frame plug-and-play injection from the source trajectory while
                editing (not TokenFlow's keyframe propagation).
            resnet_injection: fraction of sampling steps with decoder ResNet features injected.
            attention_injection: fraction of sampling steps with decoder self-attention q/k injected.
            seed: seeds the Gaussian initialisation of the bases (re-seeded at every phase).
            max_attention_gib: refuse a layer whose STEM attention would exceed this (suggests chunking).
        """
        if tau <= 0:
            raise ValueError(f"STEMInversion: tau must be > 0 (got {tau}); the released code uses 0.01")
        if iters < 1:
            raise ValueError(f"STEMInversion: iters must be >= 1 (got {iters})")
        if edit_attention not in EDIT_ATTENTION:
            raise ValueError(f"STEMInversion: edit_attention must be one of {EDIT_ATTENTION}, got {edit_attention!r}")
        self.num_bases, self.tau, self.iters, self.chunk_frames = num_bases, tau, iters, chunk_frames
        self.during_reconstruction = during_reconstruction
        self.edit_attention = edit_attention
        self.feature_injection = feature_injection
        self.resnet_injection, self.attention_injection = resnet_injection, attention_injection
        self.seed, self.max_bytes = seed, max_attention_gib * 2**30
        self._previous = None
        self._vunet = None
        self._pnp = _PnPState()
        self._hooks = []

    # Lightning: register with the module's sampling loop
    def setup(self, trainer, pl_module, stage):
        if self not in pl_module.sampling_callbacks:
            pl_module.sampling_callbacks.append(self)

    # sampling-loop hooks
    def _uses_stem(self, state: LoopState) -> bool:
        label = state.extras.get("label")
        return (state.phase == "invert" or (self.during_reconstruction and label == "reconstruct")
                or (self.edit_attention == "stem" and label == "edit"))

    def _injects(self, state: LoopState) -> bool:
        return self.feature_injection and state.extras.get("label") == "edit" and "source" in state.extras

    def on_phase_start(self, state: LoopState) -> None:
        vunet = state.model  # the VideoUNet behind the loop's denoiser
        stem, pnp = self._uses_stem(state), self._injects(state)
        if not (stem or pnp):
            return
        g = torch.Generator().manual_seed(self.seed)
        pnp_state = self._pnp if pnp else None

        def factory(name, attn):
            injected = pnp_state if name.startswith("up_blocks") else None  # decoder layers only
            if stem:
                return STEMAttnProcessor(vunet.ctx, self.num_bases, self.tau, self.iters, self.chunk_frames, g,
                                         self.max_bytes, name=name, pnp=injected)
            if injected is not None:
                return PnPFrameAttnProcessor(vunet.ctx, vunet.frame_attention, name, injected)
            return FrameAttnProcessor(vunet.ctx, vunet.frame_attention)

        self._previous, self._vunet = vunet.set_self_attention_processor(factory), vunet
        if pnp:
            self._install_resnet_hooks(vunet)

    def on_phase_end(self, state: LoopState) -> None:
        if self._previous is not None:
            self._vunet.restore_self_attention_processors(self._previous)
            self._previous, self._vunet = None, None
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self._pnp.mode, self._pnp.features = "off", {}

    # plug-and-play feature injection (per frame) ----------------------------------------------
    def _install_resnet_hooks(self, vunet) -> None:
        """ResNet features of one decoder layer (PnP's choice: the second decoder block's second
        ResNet; injecting every ResNet would copy the source outright)."""
        pnp = self._pnp
        blocks = vunet.unet.up_blocks
        bi = min(1, len(blocks) - 1)
        for ri, res in enumerate(blocks[bi].resnets[1:2] or blocks[bi].resnets[:1]):
            key = f"res{bi}.{ri}"

            def hook(mod, args, out, key=key):
                if pnp.mode == "record":
                    pnp.features[key] = out.detach()
                elif pnp.mode == "inject" and key in pnp.features:
                    src = pnp.features[key]
                    return src.repeat(out.shape[0] // src.shape[0], 1, 1, 1)
                return out

            self._hooks.append(res.register_forward_hook(hook))

    def before_step(self, state: LoopState) -> None:
        if not (state.phase == "sample" and self._injects(state)):
            return
        pnp = self._pnp
        frac = state.step / max(1, len(state.timesteps))
        if frac >= max(self.resnet_injection, self.attention_injection):
            pnp.mode, pnp.features = "off", {}
            return
        source = state.extras["source"]
        idx = list(source.timesteps).index(state.t) + 1
        z_src = source.trajectory[idx]
        pnp.mode, pnp.features = "record", {}
        with torch.no_grad():
            state.denoiser(z_src, torch.tensor(state.t, device=z_src.device), source.cond)
        if frac >= self.attention_injection:  # only ResNet features from here on
            pnp.features = {k: v for k, v in pnp.features.items() if k.startswith("res")}
        if frac >= self.resnet_injection:
            pnp.features = {k: v for k, v in pnp.features.items() if not k.startswith("res")}
        pnp.mode = "inject"
