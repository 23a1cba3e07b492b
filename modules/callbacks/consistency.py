"""Checks that every DDP rank ends with identical trainable tensors; writes the checksums."""
from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch


class DDPConsistencyCheck(L.Callback):
    def on_train_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().float().flatten() for p in pl_module.parameters() if p.requires_grad])
        stats = torch.stack([flat.sum(), (flat * torch.arange(flat.numel(), device=flat.device) % 7.0).sum(),
                             flat.abs().max()]).double()
        gathered = trainer.strategy.all_gather(stats)
        gathered = gathered.reshape(-1, stats.numel()) if trainer.world_size > 1 else stats[None]
        if trainer.global_rank == 0:
            out = Path(trainer.default_root_dir) / "ddp_consistency.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"world_size": trainer.world_size, "stats": gathered.tolist()}))
        if not torch.allclose(gathered, gathered[:1].expand_as(gathered), rtol=0, atol=0):
            raise RuntimeError(f"DDP ranks ended with different trainable tensors: {gathered.tolist()}")
