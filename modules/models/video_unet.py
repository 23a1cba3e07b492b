"""Inflation of a 2D text-to-image UNet into a pseudo-3D video UNet (Tune-A-Video style).

Convolutions and cross-attention run per frame (frames folded into the batch). Each transformer
block's self-attention `attn1` becomes *frame attention*: queries from frame i, keys/values from
the frame set S(i) (`per_frame`: {i}, i.e. the image model; `first`: {0}; `sparse_causal`:
{0, i-1}; `full`: all frames). A temporal attention `attn_temp` (LayerNorm + self-attention across
frames at each spatial location, residual) runs after each block's feed-forward; its output
projection is zero-initialised so the inflated model starts equal to the image model.

Video tensors are `(B, C, F, H, W)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import nn

FrameAttention = Literal["per_frame", "first", "sparse_causal", "full"]  # the type of every frame_attention switch
FRAME_ATTENTION_MODES: tuple[str, ...] = get_args(FrameAttention)


@dataclass
class VideoContext:
    """Shared, mutable facts about the current forward pass, read by processors and hooks."""

    num_frames: int = 1
    phase: str = "train"  # train | invert | sample | reconstruct (set by the sampling loop)


def frame_kv_index(num_frames: int, mode: str) -> list[list[int]]:
    """For each query frame i, the frames its keys/values come from."""
    if mode == "per_frame":
        return [[i] for i in range(num_frames)]
    if mode == "first":
        return [[0] for _ in range(num_frames)]
    if mode == "sparse_causal":
        return [[0, max(i - 1, 0)] for i in range(num_frames)]
    if mode == "full":
        return [list(range(num_frames)) for _ in range(num_frames)]
    raise ValueError(f"frame_attention must be one of {FRAME_ATTENTION_MODES}, got {mode!r}")


def gather_frames(x: torch.Tensor, num_frames: int, mode: str) -> torch.Tensor:
    """`x` (B·F, N, C) → keys/values per query frame (B·F, |S|·N, C)."""
    if mode == "per_frame":
        return x
    x = rearrange(x, "(b f) n c -> b f n c", f=num_frames)
    if mode == "first":
        out = x[:, :1].expand(-1, num_frames, -1, -1)
    elif mode == "sparse_causal":
        prev = torch.cat([x[:, :1], x[:, :-1]], dim=1)
        out = torch.cat([x[:, :1].expand(-1, num_frames, -1, -1), prev], dim=2)
    elif mode == "full":
        out = rearrange(x, "b f n c -> b 1 (f n) c").expand(-1, num_frames, -1, -1)
    else:
        frame_kv_index(num_frames, mode)  # raises the clear error
    return rearrange(out, "b f n c -> (b f) n c")


def attention_heads(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Multi-head SDPA on (B, N, C) projections, then the output projection."""
    b = q.shape[0]
    h = attn.heads
    q, k, v = (t.reshape(b, -1, h, t.shape[-1] // h).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    out = out.transpose(1, 2).reshape(b, -1, h * out.shape[-1]).to(q.dtype)
    return attn.to_out[1](attn.to_out[0](out))


class FrameAttnProcessor:
    """Self-attention with keys/values gathered from other frames (see module docstring)."""

    def __init__(self, ctx: VideoContext, mode: str):
        frame_kv_index(2, mode)  # validate
        self.ctx = ctx
        self.mode = mode

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, **kwargs):
        x = hidden_states
        q = attn.to_q(x)
        k = gather_frames(attn.to_k(x), self.ctx.num_frames, self.mode)
        v = gather_frames(attn.to_v(x), self.ctx.num_frames, self.mode)
        return attention_heads(attn, q, k, v)


class TemporalAttention(nn.Module):
    """LayerNorm + self-attention across frames at each spatial location (residual outside)."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.norm_temp = nn.LayerNorm(dim)
        self.attn_temp = Attention(query_dim=dim, heads=heads, dim_head=head_dim, bias=False)
        nn.init.zeros_(self.attn_temp.to_out[0].weight)
        nn.init.zeros_(self.attn_temp.to_out[0].bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        n = x.shape[1]
        y = rearrange(x, "(b f) n c -> (b n) f c", f=num_frames)
        y = self.attn_temp(self.norm_temp(y))
        return x + rearrange(y, "(b n) f c -> (b f) n c", n=n)


def _temporal_hook(ctx: VideoContext):
    def hook(block: BasicTransformerBlock, args, output):
        return block.temporal(output, ctx.num_frames)

    return hook


class VideoUNet(nn.Module):
    """A 2D `UNet2DConditionModel` inflated for video; call it on `(B, C, F, H, W)` latents.

    The wrapped UNet keeps its diffusers module paths, so adapters and exports name layers as
    diffusers does (e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`); temporal
    modules live at `<block>.temporal.attn_temp` / `<block>.temporal.norm_temp`.
    """

    def __init__(self, unet: UNet2DConditionModel, frame_attention: str = "first", temporal: bool = True):
        super().__init__()
        frame_kv_index(2, frame_attention)
        self.unet = unet
        self.ctx = VideoContext()
        self.frame_attention = frame_attention
        self.has_temporal = temporal
        self._hooks = []
        for name, block in self.transformer_blocks():
            if temporal:
                a = block.attn1
                block.temporal = TemporalAttention(a.inner_dim, a.heads, a.inner_dim // a.heads).to(
                    next(unet.parameters()).dtype
                )
                self._hooks.append(block.register_forward_hook(_temporal_hook(self.ctx)))
        self.set_frame_attention(frame_attention)

    # -- structure -----------------------------------------------------------------------------
    def transformer_blocks(self):
        for name, m in self.unet.named_modules():
            if isinstance(m, BasicTransformerBlock):
                yield name, m

    def self_attentions(self):
        """(name, Attention) of every spatial self-attention layer (`attn1`)."""
        for name, block in self.transformer_blocks():
            yield f"{name}.attn1", block.attn1

    def set_frame_attention(self, mode: str) -> None:
        self.frame_attention = mode
        self.set_self_attention_processor(lambda name, attn: FrameAttnProcessor(self.ctx, mode))

    def set_self_attention_processor(self, factory) -> dict:
        """Install `factory(name, attn)` on every `attn1`; returns the previous processors."""
        previous = {}
        for name, attn in self.self_attentions():
            previous[name] = attn.processor
            attn.set_processor(factory(name, attn))
        return previous

    def restore_self_attention_processors(self, previous: dict) -> None:
        for name, attn in self.self_attentions():
            attn.set_processor(previous[name])

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def config(self):
        return self.unet.config

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()

    # -- forward -------------------------------------------------------------------------------
    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                added_cond_kwargs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """`added_cond_kwargs` (SDXL's `text_embeds`, `time_ids`; batch-first) are repeated per frame."""
        b, c, f, h, w = sample.shape
        self.ctx.num_frames = f
        x = rearrange(sample, "b c f h w -> (b f) c h w")
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.expand(b) if t.ndim == 0 else t
        t = t.repeat_interleave(f)
        emb = encoder_hidden_states.repeat_interleave(f, dim=0)
        if added_cond_kwargs is not None:
            added_cond_kwargs = {k: v.repeat_interleave(f, dim=0) for k, v in added_cond_kwargs.items()}
        out = self.unet(x, t, encoder_hidden_states=emb, added_cond_kwargs=added_cond_kwargs).sample
        return rearrange(out, "(b f) c h w -> b c f h w", f=f)
