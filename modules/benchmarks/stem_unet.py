"""STEM benchmark part 2: one whole inversion step (a UNet forward, no grad) of the real SD1.5
architecture (random weights, inflated with temporal attention) at 16 frames × 32×32 latents, for
each self-attention mode. Modes run round-robin so the machine's load hits all of them alike."""
from __future__ import annotations

import statistics
import time

import torch


def build_video_unet(seed: int = 0):
    from diffusers import UNet2DConditionModel

    from modules.benchmarks.save import sd15_unet_config
    from modules.models import VideoUNet

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**sd15_unet_config()).eval().requires_grad_(False)
    return VideoUNet(unet, "per_frame", temporal=True)


def set_mode(vunet, mode: str) -> None:
    from modules.callbacks.stem import STEMAttnProcessor

    if mode.startswith("stem"):
        k = int(mode[4:])
        g = torch.Generator().manual_seed(0)
        vunet.set_self_attention_processor(
            lambda name, attn: STEMAttnProcessor(vunet.ctx, k, 0.01, 5, None, g, float("inf")))
    else:
        vunet.set_frame_attention({"all_frame": "full"}.get(mode, mode))


MODES = ("per_frame", "sparse_causal", "all_frame", "stem128", "stem256", "stem512")


def bench_unet_step(out: dict, frames: int = 16, size: int = 32, rounds: int = 2, modes=MODES) -> dict:
    vunet = build_video_unet()
    z = torch.randn(1, 4, frames, size, size)
    emb = torch.randn(1, 77, 768)
    t = torch.tensor(500)
    times = {m: [] for m in modes}
    with torch.no_grad():
        for r in range(rounds + 1):  # round 0 is the warm-up
            for m in modes:
                set_mode(vunet, m)
                t0 = time.perf_counter()
                vunet(z, t, emb)
                dt = time.perf_counter() - t0
                if r > 0:
                    times[m].append(dt)
                print(f"  unet step {m:>13}: {dt:7.2f} s{' (warm-up)' if r == 0 else ''}", flush=True)
    res = out.setdefault("unet_step", {})
    for m in modes:
        res[m] = {"seconds": statistics.median(times[m]), "runs": times[m]}
    res["_config"] = {"frames": frames, "latent": [size, size], "rounds": rounds, "dtype": "float32",
                      "device": "cpu", "threads": torch.get_num_threads()}
    if "stem256" in res and "per_frame" in res:
        res["_ratio_stem256_per_frame"] = res["stem256"]["seconds"] / res["per_frame"]["seconds"]
    return out
