"""Why the tiny video world does not follow the caption's motion: three one-forward probes.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/video_world_diagnostics.py                      # the committed world
    OMP_NUM_THREADS=1 .venv/bin/python scripts/video_world_diagnostics.py --ckpt runs/video-world-motion/checkpoints/last.ckpt \\
        --name stage2 --out assets/results/video_world_diagnostics.json                          # a training checkpoint's EMA

Probes (each a few seconds; the results are merged into the JSON under `--name`):

Every probe calls the family denoiser (`spec(z, t, cond)`), so a world with the frame-position
channel gets it.

- `frame_symmetry`: every frame gets the same noise image; the per-frame rms deviation of the
  predicted ε from its mean over the frames, relative to the output's rms. A pan from noise needs
  frame-dependent outputs; diffusers' `UNet3DConditionModel` has no positional embedding in its
  temporal attention, so only the zero padding of its temporal convolutions can tell the frames apart.
- `caption_gap`: on real centred pans at 2 px/frame (the 8 directions × 2 photographs), the relative
  ε-MSE increase when the caption names the opposite direction, at t = 700, 850, 950 (mixed noise).
  A model that uses the caption's direction predicts worse with the wrong one (gap > 0).
- `noise_direction`: the x0 prediction from pure (mixed) noise at t = 950, 800, 650 for the eight
  claim captions (`claim_prompts`, seeds 0–2): cosine between its phase-correlation displacement and
  the captioned one (0: no preferred direction).
- `position_gradient` (`--gradient N`, worlds with the frame-position channel): whether the training
  gradient of a frame-position input (the position channel's weights; a per-frame vector added to
  the time embedding) has a consistent sign from batch to batch when the photograph alone fixes the
  pan direction (one direction per photo), next to the RGB channels'.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from data.motion_clips import PAN_DIRECTIONS, Motion, motion_caption, render_pan, to_tensor  # noqa: E402
from data.photos import PHOTOS, photo  # noqa: E402
from modules.metrics import global_displacement  # noqa: E402
from modules.models.spec import load_model  # noqa: E402
from modules.video_world import claim_prompts, mix_frames  # noqa: E402

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def opposite(direction: str) -> str:
    return " ".join(OPPOSITE[w] for w in direction.split())


def centred_pan(name: str, motion: Motion, scale: int = 48) -> torch.Tensor:
    """`(1, 3, 8, 32, 32)`: the pan's path centred on the photo (position_jitter 0)."""
    vx, vy = motion.camera_velocity
    x0, y0 = (int(round((scale - 32) / 2 - 3.5 * v)) for v in (vx, vy))
    return to_tensor(render_pan(photo(name, scale), motion, x0, y0))[None]


@torch.no_grad()
def frame_symmetry(spec, seeds=(0, 1, 2), timesteps=(950, 500)) -> dict:
    cond = spec.encode_prompt(["a photo of a cat, panning left steadily"])
    out = {}
    for t in timesteps:
        dev = []
        for s in seeds:
            x = torch.randn(1, 3, 1, 32, 32, generator=torch.Generator().manual_seed(s)).expand(1, 3, 8, 32, 32)
            o = spec(x.contiguous(), t, cond)
            dev.append(((o - o.mean(2, keepdim=True)).pow(2).mean((0, 1, 3, 4)).sqrt() / o.pow(2).mean().sqrt()).numpy())
        d = np.mean(dev, 0)
        out[f"t{t}"] = {"per_frame": [round(float(v), 4) for v in d], "mean": round(float(d.mean()), 4)}
    return out


@torch.no_grad()
def caption_gap(spec, timesteps=(700, 850, 950)) -> dict:
    acp = spec.scheduler.alphas_cumprod
    names = list(PHOTOS)
    g = torch.Generator().manual_seed(0)
    out = {}
    for t in timesteps:
        gaps = []
        for i, d in enumerate(PAN_DIRECTIONS):
            for k in range(2):
                p, m = names[(i + 3 * k) % len(names)], Motion("pan", d, 2)
                clip = centred_pan(p, m).expand(2, -1, -1, -1, -1)
                cond = spec.encode_prompt([motion_caption(p, m), motion_caption(p, Motion("pan", opposite(d), 2))])
                eps = mix_frames(torch.randn((1, *clip.shape[1:]), generator=g)).expand(2, -1, -1, -1, -1)
                xt = acp[t].sqrt() * clip + (1 - acp[t]).sqrt() * eps
                o = spec(xt, t, cond)
                e = (o - eps).pow(2).flatten(1).mean(1)
                gaps.append(float((e[1] - e[0]) / e[0]))
        out[f"t{t}"] = {"mean": round(float(np.mean(gaps)), 4), "positive": f"{sum(v > 0 for v in gaps)}/{len(gaps)}"}
    return out


@torch.no_grad()
def noise_direction(spec, seeds=(0, 1, 2), timesteps=(950, 800, 650)) -> dict:
    acp = spec.scheduler.alphas_cumprod
    out = {}
    for t in timesteps:
        cos = []
        for s in seeds:
            pairs = claim_prompts(s)
            cond = spec.encode_prompt([motion_caption(p, m) for p, m in pairs])
            z = mix_frames(torch.randn(1, 3, 8, 32, 32, generator=torch.Generator().manual_seed(s)))
            z = z.expand(len(pairs), -1, -1, -1, -1)
            e = spec(z, t, cond)
            x0 = ((z - (1 - acp[t]).sqrt() * e) / acp[t].sqrt()).clamp(-1, 1)
            for i, (_, m) in enumerate(pairs):
                d, w = global_displacement(x0[i:i + 1]).mean(0), np.array(m.displacement)
                cos.append(float(d @ w / (np.linalg.norm(d) * np.linalg.norm(w) + 1e-9)))
        out[f"t{t}"] = {"mean_cosine": round(float(np.mean(cos)), 3), "positive": round(float(np.mean(np.array(cos) > 0)), 2)}
    return out


def position_gradient(spec, batches: int = 48, tied: bool = True, batch_size: int = 4) -> dict:
    """For a world with the frame-position channel: is the loss gradient of a frame-position input
    consistent from batch to batch? Centred pans (`direction_per_photo` when `tied`: then the
    photograph alone fixes the direction, so the frame's place alone predicts its shift), t in
    [600, 1000), mixed noise, the truncated-SNR loss (cap 50). Three inputs are probed at once:

    - `position`: the position channel's `conv_in` weights;
    - `time_embedding`: a per-frame vector (zero, so the outputs are unchanged) added to every
      ResNet's time-embedding input — how the timestep conditions the network; reported as
      `time_embedding_common` (its mean over the frames: a plain bias) and `time_embedding_per_frame`
      (the rest: what depends on the frame's place);
    - `rgb`: the RGB channels' `conv_in` weights, for scale.

    Each: |mean gradient| / mean |per-batch gradient| (pure noise: about 1/sqrt(batches)) and the
    share of entries whose mean is > 3 standard errors from zero."""
    from data.motion_clips import MotionClips
    from modules.training import truncated_snr_weights

    if not getattr(spec, "frame_position", False):
        raise ValueError("position_gradient needs a world with the frame-position channel")
    ds = MotionClips(position_jitter=2, direction_per_photo=tied, caption_dropout=0.0, p_static=0, p_zoom=0,
                     length=batches * batch_size, seed=7)
    acp = spec.scheduler.alphas_cumprod
    unet = spec.unet
    frames = 8
    per_frame = torch.zeros(frames, unet.time_embedding.linear_2.out_features, requires_grad=True)

    def add_per_frame(_, args):  # time_emb_proj input: (B·F, C), frames innermost
        return (args[0] + per_frame.repeat(args[0].shape[0] // frames, 1),)

    hooks = [m.register_forward_pre_hook(add_per_frame) for n, m in unet.named_modules() if n.endswith("time_emb_proj")]
    was = [p.requires_grad for p in unet.parameters()]
    unet.requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    grads = {k: [] for k in ("position", "time_embedding_common", "time_embedding_per_frame", "rgb")}
    try:
        for b in range(batches):
            items = [ds[b * batch_size + i] for i in range(batch_size)]
            x0 = torch.stack([it["pixel_values"] for it in items])
            t = torch.randint(600, 1000, (batch_size,), generator=g)
            eps = mix_frames(torch.randn(x0.shape, generator=g))
            a = acp[t].view(-1, 1, 1, 1, 1)
            out = spec(a.sqrt() * x0 + (1 - a).sqrt() * eps, t, spec.encode_prompt([it["caption"] for it in items]))
            w = truncated_snr_weights(spec.scheduler, t, 50)
            unet.zero_grad()
            per_frame.grad = None
            (w * (out - eps).pow(2).flatten(1).mean(1)).mean().backward()
            grads["position"].append(unet.conv_in.weight.grad[:, 3].flatten().clone())
            grads["rgb"].append(unet.conv_in.weight.grad[:, :3].flatten().clone())
            ge = per_frame.grad
            grads["time_embedding_common"].append(ge.mean(0).clone())
            grads["time_embedding_per_frame"].append((ge - ge.mean(0)).flatten().clone())
    finally:
        for h in hooks:
            h.remove()
        for p, r in zip(unet.parameters(), was):
            p.requires_grad_(r)
        unet.zero_grad(set_to_none=True)
    out = {"batches": batches, "tied": tied, "noise_level": round(batches ** -0.5, 3)}
    for k, v in grads.items():
        x = torch.stack(v)
        m, se = x.mean(0), x.std(0) / batches ** 0.5
        out[k] = {"mean_over_per_batch": round(float(m.norm() / x.norm(dim=1).mean()), 3),
                  "share_beyond_3se": round(float((m.abs() > 3 * se).float().mean()), 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-video-world", help="preset name or diffusers folder")
    ap.add_argument("--ckpt", default=None, help="a VideoWorldModule checkpoint: its EMA UNet replaces the model's")
    ap.add_argument("--name", default=None, help="key in the JSON (default: the model or checkpoint)")
    ap.add_argument("--gradient", type=int, default=0, metavar="N",
                    help="also the position-channel gradient probe over N batches (frame-position worlds)")
    ap.add_argument("--out", default=None, help="JSON to merge the results into (default: print only)")
    args = ap.parse_args()
    torch.manual_seed(0)
    spec = load_model(args.model)
    info = {"model": args.model}
    if args.ckpt:
        ck = torch.load(args.ckpt, map_location="cpu", weights_only=True)
        if "ema_state" not in ck:
            raise SystemExit(f"{args.ckpt}: no 'ema_state' (not a VideoWorldModule checkpoint with EMA)")
        if ck["ema_state"]["conv_in.weight"].shape[1] == 4 and spec.unet.config.in_channels == 3:
            from modules.gp_finetune import widen_conv_in  # a frame-position run continued from a stock world

            widen_conv_in(spec.unet, 4)
            spec.frame_position = True
        spec.unet.load_state_dict(ck["ema_state"])
        info.update(ckpt=args.ckpt, step=int(ck.get("global_step", 0)), wall_time_s=round(float(ck.get("wall_time", 0.0))))
    spec.unet.eval()
    res = {**info, "frame_symmetry": frame_symmetry(spec), "caption_gap": caption_gap(spec),
           "noise_direction": noise_direction(spec)}
    if args.gradient:
        res["position_gradient"] = position_gradient(spec, args.gradient)
    print(json.dumps(res, indent=1))
    if args.out:
        path = Path(args.out)
        data = json.loads(path.read_text()) if path.exists() else {}
        data[args.name or args.ckpt or args.model] = res
        path.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
