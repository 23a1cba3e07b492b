"""diffusers' `UNet3DConditionModel` (0.42) with what motion tuning needs and the upstream class lacks:

- **the peft adapter mixin** (`add_adapter`, `load_lora_adapter`, `set_adapters`, ...): upstream's
  class has only `UNet2DConditionLoadersMixin`, so `TextToVideoSDPipeline.load_lora_weights` fails
  with `AttributeError: ... has no attribute 'load_lora_adapter'`. With this class as the pipeline's
  `unet`, diffusers' own loader reads a `diffusers-lora` export;
- **gradient checkpointing**: upstream's `enable_gradient_checkpointing()` raises (the 3-D blocks
  never consult their `gradient_checkpointing` flag). Here every down, mid and up block runs under
  `torch.utils.checkpoint` (non-reentrant: keyword arguments, nested outputs, frozen inputs and
  dropout RNG are handled) while gradients are enabled.

The class keeps the upstream name, so `save_config` writes `_class_name: UNet3DConditionModel` and
folders stay loadable by stock diffusers; the state dict and the forward are upstream's.
"""
from __future__ import annotations

import functools

import torch
from diffusers import UNet3DConditionModel as _UpstreamUNet3D
from diffusers.loaders.peft import PeftAdapterMixin


def _checkpointed(block: torch.nn.Module, forward, *args, **kwargs):
    if torch.is_grad_enabled() and block.gradient_checkpointing:
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


class UNet3DConditionModel(_UpstreamUNet3D, PeftAdapterMixin):
    _supports_gradient_checkpointing = True

    def checkpoint_blocks(self) -> list[torch.nn.Module]:
        """The blocks run under activation checkpointing (the input transformer and the embeddings,
        small next to them, are not)."""
        return [*self.down_blocks, *([self.mid_block] if self.mid_block is not None else []), *self.up_blocks]

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func=None) -> None:
        for block in self.checkpoint_blocks():
            block.gradient_checkpointing = enable
            if enable and "forward" not in block.__dict__:
                block.forward = functools.partial(_checkpointed, block, type(block).forward.__get__(block))
            elif not enable:
                block.__dict__.pop("forward", None)
