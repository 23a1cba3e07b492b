"""Warped sampling of videos (METHODS.md §4): temporally consistent super-resolution and inpainting
with a conditional image model (a GP fine-tuned `sd`/`sdxl` UNet, e.g. `tiny-world-inpaint`).

- `warped_restore(spec, task, ...)` → `WarpedResult`: flow between consecutive conditioning frames
  (or a given `VideoFlow`), latent flow, warped noise, then the frames in chunks through
  `modules.gp_finetune.restore` with the `WarpedSampling` callback (modules/callbacks/warped.py);
- `warping_errors(result)`: the four variants (latent/pixel × first/previous frame);
  `plot_warping_errors(...)`: the per-frame plot;
- `WarpedRestorationModule`: the same from `python -m train predict -c configs/warped/*.yaml`
  (a `ClipDataModule` clip is the ground truth: downsampled for SR, masked for inpainting); the
  `WarpedVideoWriter` it adds writes the videos, the plot and metrics.json.

Conditioning frames for the flow: the given frames for inpainting (the video before masking: a mask
fixed on the screen would otherwise read as a still region), the upsampled low-res frames for SR.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch

from modules.callbacks.warped import WarpedSampling, WarpedSamplingError
from modules.flow import VideoFlow
from modules.gp_finetune import RestorationInputError, concat_channels, default_scale, restore, upsample, widen_conv_in

Task = Literal["super_resolution", "inpainting"]


@dataclass
class WarpedResult:
    restored: torch.Tensor  # (B, 3, F, H, W) in [-1, 1]
    latents: torch.Tensor  # (B, C, F, h, w) the final latents
    condition: torch.Tensor  # (B, 3, F, H, W): what the model was given (masked frames / upsampled low-res)
    flow: VideoFlow  # pixel flow of the conditioning frames
    latent_flow: VideoFlow
    target: torch.Tensor | None = None  # ground truth when known
    mask: torch.Tensor | None = None  # (B, 1, F, H, W), 1 = regenerate
    guidance_errors: list = field(default_factory=list)  # e_t per guided step, (B, frames of the chunk)
    settings: dict = field(default_factory=dict)


def _clip(x: torch.Tensor | None, name: str) -> torch.Tensor | None:
    if x is None:
        return None
    if x.ndim != 5:
        raise RestorationInputError(f"{name} must be a clip (B, C, F, H, W), got shape {tuple(x.shape)}")
    return x


def _check_mask(mask: torch.Tensor, frames: int) -> torch.Tensor:
    if mask.ndim == 4:
        mask = mask[:, :, None].expand(-1, -1, frames, -1, -1)
    covered = (mask > 0.5).flatten(2).sum(-1)  # (B, 1) pixels to regenerate per item
    if not bool((covered > 0).all()):
        raise RestorationInputError("the inpainting mask covers no pixel (1 = regenerate): there is nothing to inpaint; "
                                    "give a mask with ones where the video should be regenerated")
    return mask


def warped_restore(spec, task: str, prompts: list[str], *, pixels=None, mask=None, low_res=None,
                   scale: int | None = None, flow: VideoFlow | None = None, callback: WarpedSampling | None = None,
                   num_inference_steps: int = 50, guidance_scale: float = 1.0, progress: bool = False,
                   extra_callbacks=()) -> WarpedResult:
    """Restore a clip with warped sampling. `pixels` `(B, 3, F, H, W)` in [-1, 1] (inpainting: the frames,
    `mask` `(B, 1, [F,] H, W)` with 1 = regenerate, a 4-D mask is fixed over the frames); `low_res`
    `(B, 3, F, H/s, W/s)` (super-resolution). `flow`: pixel flow of the conditioning frames (default:
    estimated with `callback.flow_method`). Bad input (one frame, a flow of another size or with NaN, an
    empty mask) is refused before any sampling."""
    cb = callback or WarpedSampling()
    scale = scale or default_scale(spec)
    if task == "super_resolution":
        low = _clip(low_res, "low_res")
        if low is None:
            raise RestorationInputError("super-resolution needs low_res (B, 3, F, h, w)")
        cond_frames = upsample(low.float(), scale)
        target = _clip(pixels, "pixels")
    elif task == "inpainting":
        target = _clip(pixels, "pixels")
        if target is None or mask is None:
            raise RestorationInputError("inpainting needs pixels (B, 3, F, H, W) and mask (B, 1, [F,] H, W)")
        mask = _check_mask(mask, target.shape[2]).float()
        cond_frames = target
    else:
        raise RestorationInputError(f"task must be super_resolution or inpainting, got {task!r}")
    b, _, f, h, w = cond_frames.shape
    if f < 2:
        raise WarpedSamplingError(f"warped sampling follows a video's motion: it needs at least 2 frames, got {f} "
                                  "(restore a single image with modules.gp_finetune.restore)")
    if spec.latent_frames(f) != f:
        raise WarpedSamplingError(f"the '{spec.family}' model compresses time ({f} frames -> {spec.latent_frames(f)} "
                                  "latent frames); warped sampling needs an image model (sd / sdxl) run per frame")
    if flow is None:
        flow = VideoFlow.estimate(cond_frames[0], method=cb.flow_method, raft_weights=cb.raft_weights)
    flow.check_frames(f, h, w, "conditioning frames")
    factor = spec.vae_scale_factor
    latent_flow = flow.to_latent(factor)
    c, _, hl, wl = spec.latent_shape(f, h, w)
    cb.begin_video(latent_flow)
    noise = cb.noise_for((len(prompts), c, f, hl, wl))
    outs = []
    for s, e in cb.chunks(f):
        cb.begin_chunk(s, e)
        kw = ({"low_res": low[:, :, s:e]} if task == "super_resolution"
              else {"pixels": target[:, :, s:e], "mask": mask[:, :, s:e]})
        outs.append(restore(spec, task, list(prompts), scale=scale, noise=noise[:, :, s:e],
                            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                            callbacks=[cb, *extra_callbacks], progress=progress, **kw))
    restored = torch.cat(outs, dim=2)
    latents = torch.cat(cb.latents, dim=2)
    shown = cond_frames if task == "super_resolution" else cond_frames * (1 - (mask > 0.5).float())
    settings = {"task": task, "noise": cb.noise, "base_noise": cb.base_noise, "guidance": cb.guidance_scale,
                "frame_chunk": cb.frame_chunk, "flow": cb.flow_method, "steps": num_inference_steps,
                "cfg": guidance_scale, "seed": cb.seed, "frames": f, "size": [h, w]}
    return WarpedResult(restored, latents, shown, flow, latent_flow, target, mask, list(cb.errors), settings)


# -- warping errors -----------------------------------------------------------------------------------------
def warping_errors(result: WarpedResult, item: int = 0) -> dict[str, list[float]]:
    """Per-frame warping errors (frames 1..F−1) in four variants: `latent_first`, `latent_previous` (the final
    latents on the latent flow), `pixel_first`, `pixel_previous` (the restored frames, intensities in [0, 1],
    on the pixel flow)."""
    from modules.metrics import reference_warping_error

    lat = result.latents[item].float()
    px = (result.restored[item].float().clamp(-1, 1) + 1) / 2
    out = {}
    for ref in ("first", "previous"):
        out[f"latent_{ref}"] = reference_warping_error(lat, result.latent_flow, ref).tolist()
        out[f"pixel_{ref}"] = reference_warping_error(px, result.flow, ref).tolist()
    return out


def plot_warping_errors(curves: dict[str, dict[str, list[float]]] | dict[str, list[float]], path, title: str = ""):
    """Per-frame warping error: one panel per variant, one line per run (`{run: {variant: values}}`), or one
    run's `{variant: values}`. Log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if curves and all(isinstance(v, list) for v in curves.values()):
        curves = {"": curves}
    variants = ["latent_first", "latent_previous", "pixel_first", "pixel_previous"]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2), sharex=True)
    for ax, var in zip(axes, variants):
        for run, errs in curves.items():
            vals = np.asarray(errs.get(var, []), dtype=float)
            if vals.size:
                ax.plot(np.arange(1, vals.size + 1), np.maximum(vals, 1e-12), marker="o", ms=3, label=run or None)
        ax.set_yscale("log")
        ax.set_title(var.replace("_", " / "))
        ax.set_xlabel("frame")
    axes[0].set_ylabel("warping error (MSE)")
    if any(curves):
        axes[-1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_outputs(out_dir, result: WarpedResult, fps: float = 8.0, tag: str = "warped") -> dict[str, Path]:
    """`<tag>_restored.mp4`, `<tag>_input.mp4`, `<tag>_side_by_side.mp4` (input | restored [| target]),
    `<tag>_warping_error.png` and `<tag>_metrics.json` (four warping-error variants, region PSNR)."""
    from data.video_io import side_by_side, to_frames, write_video
    from modules.gp_finetune import region_psnr

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    restored, shown = to_frames(result.restored[0]), to_frames(result.condition[0])
    videos = [shown, restored] + ([to_frames(result.target[0])] if result.target is not None else [])
    paths = {"restored": write_video(out / f"{tag}_restored.mp4", restored, fps),
             "input": write_video(out / f"{tag}_input.mp4", shown, fps),
             "side_by_side": write_video(out / f"{tag}_side_by_side.mp4", side_by_side(*videos), fps)}
    errs = warping_errors(result)
    paths["plot"] = plot_warping_errors(errs, out / f"{tag}_warping_error.png",
                                        f"{result.settings.get('task')}: noise {result.settings.get('noise')}, "
                                        f"λ = {result.settings.get('guidance')}")
    metrics = {"settings": result.settings,
               "warping_error": {k: float(np.nanmean(v)) for k, v in errs.items()},
               "warping_error_per_frame": errs}
    if result.target is not None:
        region = result.mask if result.mask is not None else None
        metrics["psnr"] = float(region_psnr(result.restored.cpu(), result.target.cpu(),
                                            None if region is None else region.cpu() > 0.5).mean())
    paths["metrics"] = out / f"{tag}_metrics.json"
    paths["metrics"].write_text(json.dumps(metrics, indent=2, allow_nan=True))
    return paths


# -- the LightningModule (python -m train predict) --------------------------------------------------------------
def box_mask(height: int, width: int, box: tuple[float, float, float, float]) -> torch.Tensor:
    """`(1, 1, H, W)` mask, 1 inside the box (top, left, height, width as fractions of the frame)."""
    top, left, bh, bw = box
    if not all(0 <= v <= 1 for v in box):
        raise RestorationInputError(f"mask_box values are fractions of the frame in [0, 1], got {box}")
    m = torch.zeros(1, 1, height, width)
    y0, x0 = round(top * height), round(left * width)
    m[..., y0:y0 + max(0, round(bh * height)), x0:x0 + max(0, round(bw * width))] = 1
    return m


def load_mask(path, height: int, width: int) -> torch.Tensor:
    """A mask image (white / nonzero = regenerate) resized (nearest) to the frame: `(1, 1, H, W)`."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise RestorationInputError(f"mask_file '{path}' is not a readable image (PNG/JPEG, white = regenerate)")
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_NEAREST)
    return torch.from_numpy((img > 127).astype(np.float32))[None, None]


def load_conditional_model(model: str, task: str, export: str | None = None):
    """The spec of a conditional model for `task`: a GP fine-tuning export on its base (`export`), or a folder /
    preset whose UNet takes the task's channels. A base model (plain channels) is widened with zero weights
    for the conditioning — a valid model that ignores the condition (warned)."""
    import warnings

    from modules.gp_finetune import load_finetuned
    from modules.models.spec import load_model
    from modules.models.video_unet import VideoUNet

    if export:
        spec, card = load_finetuned(model, export)
        if card.get("task") != task:
            raise RestorationInputError(f"export {export} is a {card.get('task')} model, not {task}")
        return spec
    spec = load_model(model)
    if spec.family not in ("sd", "sdxl"):
        raise RestorationInputError(f"model '{model}' is a '{spec.family}' model; warped restoration needs a "
                                    "conditional image model (sd / sdxl, GP fine-tuned)")
    need = spec.latent_channels + concat_channels(spec, task)
    if spec.in_channels != need:
        if spec.in_channels != spec.latent_channels:
            raise RestorationInputError(f"model '{model}' takes {spec.in_channels} input channels; {task} needs {need}")
        warnings.warn(f"model '{model}' is not a model for {task}: its conv_in is widened with zero weights, so it ignores "
                      "the conditioning; use a GP fine-tuned model (e.g. tiny-world-inpaint, or --export)", stacklevel=2)
        widen_conv_in(spec.unet, need)
        spec.model = VideoUNet(spec.unet, "per_frame", temporal=False).eval()
    return spec


class WarpedRestorationModule(L.LightningModule):
    def __init__(self, model: str = "tiny-world-inpaint", export: str | None = None, task: Task = "inpainting",
                 scale: int | None = None, mask_box: tuple[float, float, float, float] = (0.25, 0.25, 0.5, 0.5),
                 mask_file: str | None = None, flow_file: str | None = None, num_inference_steps: int = 50,
                 guidance_scale: float = 1.0, fps: float = 8.0):
        """
        Args:
            model: a conditional model folder or preset (`tiny-world-inpaint`), or the base of `export`.
            export: a GP fine-tuning export folder (`diffusers-model`) to load on `model`.
            task: `inpainting` (the clip masked by `mask_box` / `mask_file`, fixed over frames) or
                `super_resolution` (the clip downsampled by `scale` is the input; the clip is the ground truth).
            scale: super-resolution factor (None: the model's default, ×4 pixel-space / ×8 latent).
            mask_box: (top, left, height, width) fractions of the frame to regenerate.
            mask_file: a mask image (white = regenerate) instead of the box.
            flow_file: a `.npy` forward flow `(F-1, H, W, 2)` of the clip at this size (e.g. ground truth) instead
                of estimating it.
            num_inference_steps: DDIM steps (paper 50).
            guidance_scale: classifier-free guidance on the caption (1: none).
            fps: frame rate of the written videos.
        """
        super().__init__()
        self.save_hyperparameters()
        self.spec = load_conditional_model(model, task, export)
        for name, module in self.spec.modules().items():
            self.add_module(f"frozen_{name}", module)
        self.task = task
        self.scale = int(scale or default_scale(self.spec))
        self.sampling_callbacks: list = []  # the WarpedSampling callback of the recipe registers here

    def configure_callbacks(self):
        return [WarpedVideoWriter()]

    def predict_step(self, batch, batch_idx) -> WarpedResult:
        cbs = [c for c in self.sampling_callbacks if isinstance(c, WarpedSampling)]
        if len(cbs) != 1:
            raise WarpedSamplingError("the recipe needs exactly one modules.callbacks.warped.WarpedSampling in "
                                      f"trainer.callbacks (found {len(cbs)})")
        # the guidance differentiates through the network: leave Lightning's inference mode for this step
        with torch.inference_mode(False), torch.enable_grad():
            return self._restore(batch["pixel_values"][:1].clone().to(self.device), batch["prompt"][0], cbs[0])

    def _restore(self, px: torch.Tensor, prompt: str, cb: WarpedSampling) -> WarpedResult:
        from data.restoration import downsample

        _, _, f, h, w = px.shape
        flow = None
        if self.hparams.flow_file:
            flow = VideoFlow.from_forward(np.load(self.hparams.flow_file))
        kw = {"pixels": px}
        if self.task == "super_resolution":
            kw["low_res"] = downsample(px.transpose(1, 2), self.scale).transpose(1, 2)
        else:
            hp = self.hparams
            m = load_mask(hp.mask_file, h, w) if hp.mask_file else box_mask(h, w, tuple(hp.mask_box))
            kw["mask"] = m.to(self.device)
        others = [c for c in self.sampling_callbacks if c is not cb]
        return warped_restore(self.spec, self.task, [prompt], scale=self.scale, flow=flow, callback=cb,
                              num_inference_steps=self.hparams.num_inference_steps,
                              guidance_scale=self.hparams.guidance_scale, progress=True, extra_callbacks=others, **kw)

    def configure_optimizers(self):
        return None


class WarpedVideoWriter(L.Callback):
    """Writes a `WarpedResult` into `<run>/videos`: restored, input, side-by-side, warping-error plot, metrics."""

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not isinstance(outputs, WarpedResult) or not trainer.is_global_zero:
            return
        tag = "predict" if batch_idx == 0 else f"predict{batch_idx:03d}"
        paths = write_outputs(Path(trainer.default_root_dir) / "videos", outputs, pl_module.hparams.fps, tag)
        print("[warped] " + ", ".join(f"{k} -> {v}" for k, v in paths.items()))


# -- a video file from the command line (scripts/edit.py --task ...) -----------------------------------------------
DEFAULT_MODELS = {"inpainting": "tiny-world-inpaint", "super_resolution": "tiny-world-sr"}


def restore_video_file(video, task: str, out_dir, callback: WarpedSampling, *, prompt: str = "", model: str | None = None,
                       export: str | None = None, num_frames: int = 8, stride: int = 1, height: int = 32,
                       width: int = 32, scale: int | None = None, low_res_input: bool = False,
                       mask_box=(0.25, 0.25, 0.5, 0.5), mask_file=None, flow_file=None, steps: int = 50,
                       fps: float | None = None) -> dict:
    """Restore a video file and write the outputs (`write_outputs`). The clip is read at `height × width`;
    super-resolution downsamples it by `scale` as the input (the clip is the ground truth, PSNR reported)
    unless `low_res_input` (then the clip is the low-res input and the output is `scale`× larger).
    Inpainting regenerates `mask_box` (fractions) or the white pixels of `mask_file`, fixed over frames."""
    from data.clip_dataset import ClipDataset
    from data.restoration import downsample
    from data.video_io import video_fps

    if task not in DEFAULT_MODELS:
        raise RestorationInputError(f"--task must be super_resolution or inpainting, got {task!r}")
    ds = ClipDataset(video, prompt=prompt or "", num_frames=num_frames, stride=stride, height=height, width=width)
    px = ds.frames(0)[None].clone()
    if px.shape[2] < 2:
        raise WarpedSamplingError(f"{video}: {px.shape[2]} frame read; warped sampling needs at least 2 "
                                  "(--num-frames >= 2 and a video that long)")
    flow = None
    if flow_file:
        flow = VideoFlow.from_forward(np.load(flow_file))
    if task == "inpainting":  # checked before the model loads
        m = load_mask(mask_file, height, width) if mask_file else box_mask(height, width, tuple(mask_box))
        _check_mask(m, px.shape[2])
    spec = load_conditional_model(model or DEFAULT_MODELS[task], task, export)
    scale = int(scale or default_scale(spec))
    if task == "super_resolution":
        if low_res_input:
            kw = {"low_res": px}
            if flow is not None:
                flow.check_frames(px.shape[2], height * scale, width * scale, "upsampled frames (--flow-file)")
        else:
            kw = {"low_res": downsample(px.transpose(1, 2), scale).transpose(1, 2), "pixels": px}
    else:
        kw = {"pixels": px, "mask": m}
    res = warped_restore(spec, task, [prompt], scale=scale, flow=flow, callback=callback, num_inference_steps=steps,
                         progress=True, **kw)
    rate = fps or video_fps(ds.clips[0].video) / stride
    rate = rate if np.isfinite(rate) and rate > 0 else 8.0
    paths = write_outputs(out_dir, res, rate, tag="warped")
    return {"paths": paths, "metrics": json.loads(Path(paths["metrics"]).read_text())}
