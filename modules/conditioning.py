"""Conditioning: the batchable keyword arguments a denoiser takes besides `(z, t)`.

Every model family turns prompts (and, for conditional tasks, extra inputs) into one
`Conditioning`: a mapping of names to tensors whose first dimension is the batch. The sampling
loop never looks inside; it only concatenates (classifier-free guidance doubles the batch),
repeats, slices, and moves them. Names follow the family's network where one exists
(`encoder_hidden_states`), plus family-neutral ones the spec consumes itself:

- `encoder_hidden_states` `(B, L, D)`: text tokens (every family);
- `text_embeds` `(B, D)`, `time_ids` `(B, 6)`: SDXL's added conditions;
- `concat_latents` `(B, Cc, F, h, w)`: channel-concatenated conditioning (super-resolution input,
  inpainting mask + masked latents), appended after the noisy latent by the family's denoiser.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Conditioning:
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    # -- mapping -------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    def get(self, key: str, default=None):
        return self.tensors.get(key, default)

    def keys(self):
        return self.tensors.keys()

    def with_(self, **tensors: torch.Tensor) -> "Conditioning":
        """A copy with some entries added or replaced (e.g. `concat_latents` for a conditional task)."""
        return Conditioning({**self.tensors, **tensors})

    @property
    def batch_size(self) -> int:
        sizes = {v.shape[0] for v in self.tensors.values()}
        if len(sizes) > 1:
            raise ValueError(f"Conditioning entries disagree on the batch size: "
                             f"{ {k: tuple(v.shape) for k, v in self.tensors.items()} }")
        return sizes.pop() if sizes else 0

    # -- batch operations ----------------------------------------------------------------------
    @staticmethod
    def cat(conds: list["Conditioning"]) -> "Conditioning":
        keys = list(conds[0].tensors)
        for c in conds[1:]:
            if list(c.tensors) != keys:
                raise ValueError(f"cannot batch conditionings with different entries: {keys} vs {list(c.tensors)}")
        return Conditioning({k: torch.cat([c.tensors[k] for c in conds]) for k in keys})

    def repeat(self, n: int) -> "Conditioning":
        """Each item repeated `n` times (item-major), e.g. one prompt for a batch of clips."""
        return Conditioning({k: v.repeat_interleave(n, dim=0) for k, v in self.tensors.items()})

    def expand_to(self, batch: int) -> "Conditioning":
        """Broadcast a batch-1 conditioning to `batch` items (no-op when it already has them)."""
        b = self.batch_size
        if b == batch:
            return self
        if b != 1:
            raise ValueError(f"conditioning has batch {b}, cannot broadcast to {batch}")
        return self.repeat(batch)

    def select(self, idx) -> "Conditioning":
        """Rows `idx` (int, slice or index tensor) of every entry."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return Conditioning({k: v[idx] for k, v in self.tensors.items()})

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Conditioning":
        """Move to `device`; cast floating entries to `dtype` (integer ids keep theirs)."""
        return Conditioning({
            k: v.to(device=device, dtype=dtype if (dtype is not None and v.is_floating_point()) else v.dtype)
            for k, v in self.tensors.items()
        })

    def detach(self) -> "Conditioning":
        return Conditioning({k: v.detach() for k, v in self.tensors.items()})
