"""SMA benchmark: `python scripts/benchmark.py sma --out DIR` -> `DIR/sma.json`, `DIR/sma.md`.

What it measures (issue 11): for both hosts (`VMCModule`, `MotionDirectorModule`), the training
step with SMA's terms (`sma: true`) vs the host alone (`sma: false`) — step time and peak memory —
at 8 and 16 frames, on a UNet3D with Zeroscope v2's depth and block layout (4 levels, 2 layers per
block, cross-attention in the first three, a temporal transformer at the input) at reduced width
(random weights, built from the `tiny-unet3d` preset's parts). Also MotionDirector's step / VMC's,
and peak memory with and without the `unet3d` family's gradient checkpointing.

Protocol (CPU timings on a shared machine are noisy): every variant is a real `Trainer.fit` of the
real module on a real clip (a rendered pan written as mp4 and read by `ClipDataModule`), in its own
long-lived worker process, so its peak memory is its own (RSS high-water mark reset when training
starts, on CPU; `max_memory_allocated` reset there, on CUDA). The worker's `StepGate` callback holds
each training batch until the parent asks for it, so the parent alternates the variants step by step
over `rounds` rounds with a rotating order (`steps` steps of a variant per turn); a step is timed from batch start to batch end (forward,
backward(s), optimiser step(s)). Ratios are the median over rounds of the per-round ratio; every
round's figure is in the JSON. The ratios use the process CPU time per step on CPU (run with 1 worker
thread: the wall time of a shared machine also measures its other jobs; it is reported beside) and
the wall time on CUDA. A variant with `sma: false` still computes the spectral terms without a graph
for the log (the host's own module does), so the ratio is the cost of their gradient.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

HOSTS = ("vmc", "motiondirector")
#: Zeroscope v2's UNet3D layout at reduced width (the released model: 320/640/1280/1280, 64-wide heads)
ZEROSCOPE_DEPTH = {
    "block_out_channels": [32, 64, 128, 128], "layers_per_block": 2, "attention_head_dim": 8,
    "down_block_types": ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
    "up_block_types": ["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3,
}
PROMPT = "an object is moving"
RATIO_MAX = 1.05  # SMA / host, step time and peak memory (the targets)


@dataclass
class SMABenchConfig:
    frames: tuple[int, ...] = (8, 16)
    size: int = 32  # pixel side of the clip (the tiny VAE halves it: latents size/2)
    warmup: int = 2
    rounds: int = 5
    steps: int = 1  # timed steps per variant in each round
    rank: int = 32  # MotionDirector's LoRA rank (released 32)
    threads: int = 0
    device: str = "cpu"
    checkpointing_frames: int = 16  # frame count of the with/without gradient checkpointing pair
    timeout_s: float = 1800.0
    model_dir: str = ""  # filled by the parent: the reduced-width Zeroscope-depth folder
    clip_dir: str = ""  # filled by the parent: folder of the rendered pans


@dataclass(frozen=True)
class Variant:
    host: str
    sma: bool
    frames: int
    checkpointing: bool = False

    @property
    def name(self) -> str:
        return f"{self.host}-{'sma' if self.sma else 'base'}-{self.frames}f" + ("-ckpt" if self.checkpointing else "")

    @classmethod
    def parse(cls, name: str) -> "Variant":
        parts = name.split("-")
        return cls(parts[0], parts[1] == "sma", int(parts[2].rstrip("f")), len(parts) > 3)


def variants(cfg: SMABenchConfig) -> list[Variant]:
    out = [Variant(h, s, f) for f in cfg.frames for h in HOSTS for s in (False, True)]
    if cfg.checkpointing_frames:
        out += [Variant(h, True, cfg.checkpointing_frames, True) for h in HOSTS]
    return out


# -- inputs --------------------------------------------------------------------------------------
def build_model(root: Path) -> Path:
    """`tiny-unet3d`'s folder with its UNet rebuilt at Zeroscope's depth (random weights)."""
    from bench.families import build_variant

    return Path(build_variant("tiny-unet3d", ZEROSCOPE_DEPTH, root))


def render_clip(frames: int, size: int, out_dir: Path) -> Path:
    """A pan of the astronaut photograph (2 px/frame to the right), `frames` x `size`², as mp4."""
    from data.make_samples import CRF, FPS, PIX_FMT
    from data.motion_clips import Motion, render_pan
    from data.photos import photo
    from data.video_io import write_video

    motion = Motion("pan", "right", 2)
    canvas = photo("astronaut", size + 2 * (frames - 1))
    path = out_dir / f"pan_{frames}f.mp4"
    write_video(path, render_pan(canvas, motion, 0, 0, frames, size), fps=FPS, crf=CRF, pix_fmt=PIX_FMT)
    return path


# -- worker side ---------------------------------------------------------------------------------


def _proc_kib(key: str) -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def _serve(cfg: SMABenchConfig, variant: Variant) -> None:
    """Worker: one real `Trainer.fit` whose batches wait for the parent's `step` commands."""
    import lightning as L
    import torch

    from data.clip_dataset import ClipDataModule
    from modules.sma import MotionDirectorModule, VMCModule

    from functools import partial

    from bench.workers import answer

    channel, sys.stdout = sys.stdout, sys.stderr  # library prints must not mix with the answers
    send = partial(answer, channel)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cuda = cfg.device.startswith("cuda")
    total = cfg.warmup + cfg.rounds * cfg.steps

    class StepGate(L.Callback):
        def on_train_start(self, trainer, module):
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            else:
                Path("/proc/self/clear_refs").write_text("5")  # RSS high-water mark from here

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            cmd = sys.stdin.readline()
            if json.loads(cmd)["op"] != "step":
                raise RuntimeError(f"unexpected command {cmd!r}")
            if cuda:
                torch.cuda.synchronize()
            self.t, self.c = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if cuda:
                torch.cuda.synchronize()
            loss = trainer.callback_metrics.get("train/loss")
            send({"time_s": time.perf_counter() - self.t, "cpu_s": time.process_time() - self.c,
                  "loss": float(loss) if loss is not None else None})

    common = dict(model=cfg.model_dir, sma=variant.sma, gradient_checkpointing=variant.checkpointing, seed=0)
    if variant.host == "vmc":
        module = VMCModule(**common)
    else:
        module = MotionDirectorModule(rank=cfg.rank, **common)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    if variant.host == "motiondirector":
        trainable = sum(p.numel() for ps in module.lora_params.values() for p in ps)
    data = ClipDataModule(video=str(Path(cfg.clip_dir) / f"pan_{variant.frames}f.mp4"), prompt=PROMPT,
                          num_frames=variant.frames, height=cfg.size, width=cfg.size, steps_per_epoch=total)
    trainer = L.Trainer(accelerator="gpu" if cuda else "cpu", devices=1, max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[StepGate()],
                        default_root_dir=tempfile.mkdtemp(prefix="vidtune-bench-sma-"))
    send({"variant": variant.name, "trainable_params": trainable, "torch_threads": torch.get_num_threads()})
    trainer.fit(module, datamodule=data)
    import shutil

    shutil.rmtree(trainer.default_root_dir, ignore_errors=True)
    peak = (torch.cuda.max_memory_allocated() if cuda else (_proc_kib("VmHWM") or 0) * 1024)
    send({"peak_mem_bytes": peak, "peak_mem_kind": "cuda_max_allocated" if cuda else "rss_hwm_since_train_start"})
    sys.stdin.readline()  # "finish"


# -- parent side ---------------------------------------------------------------------------------
class Worker:
    """A variant's worker process (`bench.workers.WorkerProcess`)."""

    def __init__(self, cfg: SMABenchConfig, variant: Variant):
        from bench.workers import WorkerProcess

        self.variant = variant
        self.proc = WorkerProcess("bench.sma", [json.dumps(asdict(cfg)), variant.name], variant.name, cfg.timeout_s)
        self.info = self.proc.recv()

    def step(self) -> dict:
        return self.proc.call("step")

    def finish(self) -> dict:
        res = self.proc.recv()  # the peak, sent when fit returns
        self.proc.send("finish")
        return res

    def close(self) -> None:
        self.proc.close()


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def run(out_dir: str | Path, cfg: SMABenchConfig, log: Callable[[str], None] = print) -> dict:
    """Alternates every variant of one frame count step by step (workers of that frame count alive at
    once), then the next frame count; writes `sma.json` and `sma.md`."""
    import torch

    if cfg.rounds < 3:
        log(f"note: {cfg.rounds} rounds; the protocol asks for >= 3")
    start, load_start = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vidtune-bench-sma-") as tmp:
        cfg.model_dir = str(build_model(Path(tmp)))
        cfg.clip_dir = tmp
        for f in sorted(set(cfg.frames) | ({cfg.checkpointing_frames} if cfg.checkpointing_frames else set())):
            render_clip(f, cfg.size, Path(tmp))
        unet_params = sum(p.numel() for p in _load_unet(cfg.model_dir).parameters())
        log(f"Zeroscope-depth UNet3D at reduced width: {unet_params / 1e6:.2f}M parameters; clips {cfg.size}² px "
            f"(latents {cfg.size // 2}²), frames {list(cfg.frames)}")
        groups: dict[int, list[Variant]] = {}
        for v in variants(cfg):
            groups.setdefault(v.frames, []).append(v)
        results: dict[str, dict] = {}
        for frames, group in groups.items():
            workers: dict[str, Worker] = {}
            try:
                for v in group:
                    workers[v.name] = Worker(cfg, v)
                    results[v.name] = {**workers[v.name].info, "steps": []}
                    log(f"{v.name}: ready ({results[v.name]['trainable_params']:,} trainable parameters)")
                for v in group:
                    for _ in range(cfg.warmup):
                        s = workers[v.name].step()
                        log(f"{v.name}: warm-up {s['time_s']:.2f} s")
                for r in range(cfg.rounds):
                    order = group[r % len(group):] + group[:r % len(group)]
                    for v in order:
                        for _ in range(cfg.steps):
                            s = workers[v.name].step()
                            s["round"] = r
                            results[v.name]["steps"].append(s)
                            log(f"round {r + 1}/{cfg.rounds} {v.name}: {s['time_s']:.3f} s (CPU {s['cpu_s']:.3f} s)")
                for v in group:
                    results[v.name].update(workers[v.name].finish())
            finally:
                for w in workers.values():
                    w.close()
    result = summarise(cfg, results, unet_params)
    result["environment"] = {"torch": torch.__version__, "device": cfg.device, "cpu_count": os.cpu_count(),
                             "platform": platform.platform(), "loadavg_start": list(load_start),
                             "loadavg_end": list(os.getloadavg()), "wall_time_s": time.perf_counter() - start}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sma.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (out / "sma.md").write_text(md)
    log(md)
    return result


def _load_unet(folder: str):
    from modules.models.unet3d_model import UNet3DConditionModel

    return UNet3DConditionModel.from_pretrained(folder, subfolder="unet")


def _round_ratio(a: dict, b: dict, key: str) -> list[float]:
    """Per round, median step of `a` / median step of `b`."""
    rounds = sorted({s["round"] for s in a["steps"]} & {s["round"] for s in b["steps"]})
    med = lambda x, r: statistics.median([s[key] for s in x["steps"] if s["round"] == r])  # noqa: E731
    return [med(a, r) / med(b, r) for r in rounds]


def summarise(cfg: SMABenchConfig, results: dict, unet_params: int) -> dict:
    hosts: dict = {}
    key = "time_s" if cfg.device.startswith("cuda") else "cpu_s"  # the step time the ratios use
    for host in HOSTS:
        per_frames = {}
        for f in cfg.frames:
            sma, base = results[Variant(host, True, f).name], results[Variant(host, False, f).name]
            rt, rc = _round_ratio(sma, base, "time_s"), _round_ratio(sma, base, "cpu_s")
            primary = rt if cfg.device.startswith("cuda") else rc
            per_frames[str(f)] = {
                "step_time_s_sma": _median([s[key] for s in sma["steps"]]),
                "step_time_s_base": _median([s[key] for s in base["steps"]]),
                "wall_s_sma": _median([s["time_s"] for s in sma["steps"]]),
                "wall_s_base": _median([s["time_s"] for s in base["steps"]]),
                "ratio": _median(primary), "round_ratios": primary, "wall_ratio": _median(rt), "wall_round_ratios": rt,
                "cpu_s_sma": _median([s["cpu_s"] for s in sma["steps"]]),
                "cpu_s_base": _median([s["cpu_s"] for s in base["steps"]]),
                "cpu_ratio": _median(rc), "cpu_round_ratios": rc,
                "peak_mem_sma": sma["peak_mem_bytes"], "peak_mem_base": base["peak_mem_bytes"],
                "mem_ratio": sma["peak_mem_bytes"] / base["peak_mem_bytes"],
                "trainable_params": sma["trainable_params"],
            }
        worst = max(per_frames.values(), key=lambda d: d["ratio"])
        hosts[host] = {**{k: worst[k] for k in ("step_time_s_sma", "step_time_s_base", "ratio",
                                                  "peak_mem_sma", "peak_mem_base", "mem_ratio")},
                       "frames": per_frames}
        if cfg.checkpointing_frames:
            ck = results[Variant(host, True, cfg.checkpointing_frames, True).name]
            no = results[Variant(host, True, cfg.checkpointing_frames).name]
            hosts[host]["gradient_checkpointing"] = {
                "frames": cfg.checkpointing_frames, "peak_mem_with": ck["peak_mem_bytes"],
                "peak_mem_without": no["peak_mem_bytes"], "mem_ratio": ck["peak_mem_bytes"] / no["peak_mem_bytes"],
                "step_time_s_with": _median([s[key] for s in ck["steps"]]),
                "step_time_s_without": _median([s[key] for s in no["steps"]]),
                "time_ratio": _median(_round_ratio(ck, no, key)),
            }
    md_over_vmc = {str(f): _median(_round_ratio(results[Variant("motiondirector", True, f).name],
                                                results[Variant("vmc", True, f).name], key))
                   for f in cfg.frames}
    targets = {f"{h}.{k}": {"value": hosts[h][k], "limit": RATIO_MAX, "met": hosts[h][k] <= RATIO_MAX}
               for h in HOSTS for k in ("ratio", "mem_ratio")}
    return {"benchmark": "sma", "config": {k: v for k, v in asdict(cfg).items() if k not in ("model_dir", "clip_dir")},
            "model": {"layout": ZEROSCOPE_DEPTH, "unet_params": unet_params},
            "step_time_measure": "wall" if key == "time_s" else "process_cpu",
            "hosts": hosts, "motiondirector_over_vmc_step": md_over_vmc, "targets": targets,
            "variants": results}


def _mb(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def markdown(result: dict) -> str:
    cfg, env = result["config"], result.get("environment", {})
    lines = [f"# SMA benchmark (Zeroscope-depth UNet3D, reduced width: {result['model']['unet_params'] / 1e6:.2f}M "
             f"parameters, random weights; {cfg['size']}² px clips, {cfg['device']})", "",
             f"{cfg['rounds']} alternating rounds after {cfg['warmup']} warm-up step(s), one worker process per "
             "variant, a real `Trainer.fit` in each. Ratio = median over rounds of (step with SMA / step without).", "",
             f"Step time = {'wall time' if result['step_time_measure'] == 'wall' else 'process CPU time (1 worker thread; the wall time of a shared CPU also measures the other jobs: wall ratio beside it)'}.", "",
             "| host | frames | step with SMA | without | ratio (rounds) | wall ratio | peak mem with | without | ratio |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for host, h in result["hosts"].items():
        for f, d in h["frames"].items():
            rounds = ", ".join(f"{r:.3f}" for r in d["round_ratios"])
            lines.append(f"| {host} | {f} | {d['step_time_s_sma']:.3f} s | {d['step_time_s_base']:.3f} s | "
                         f"**{d['ratio']:.3f}** ({rounds}) | {d['wall_ratio']:.3f} | {_mb(d['peak_mem_sma'])} | "
                         f"{_mb(d['peak_mem_base'])} | **{d['mem_ratio']:.3f}** |")
    lines += ["", "MotionDirector step / VMC step (both with SMA): "
              + ", ".join(f"{f} frames {r:.2f}" for f, r in result["motiondirector_over_vmc_step"].items()), ""]
    if any("gradient_checkpointing" in h for h in result["hosts"].values()):
        lines += ["| host (with SMA) | frames | peak mem with checkpointing | without | ratio | step time ratio |",
                  "|---|---:|---:|---:|---:|---:|"]
        for host, h in result["hosts"].items():
            g = h.get("gradient_checkpointing")
            if g:
                lines.append(f"| {host} | {g['frames']} | {_mb(g['peak_mem_with'])} | {_mb(g['peak_mem_without'])} | "
                             f"{g['mem_ratio']:.3f} | {g['time_ratio']:.2f} |")
        lines.append("")
    lines += ["| target | value | met |", "|---|---:|:---:|"]
    for k, t in result["targets"].items():
        lines.append(f"| {k} ≤ {t['limit']} | {t['value']:.3f} | {'yes' if t['met'] else 'NO'} |")
    if env:
        lines += ["", f"Load average {env['loadavg_start'][0]:.1f} at the start, {env['loadavg_end'][0]:.1f} at the end "
                  f"({env['cpu_count']} CPUs, shared); whole run {env['wall_time_s']:.0f} s. Peak memory on CPU is the "
                  "worker's RSS high-water mark from the start of training (model and data loaded before)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        raw = json.loads(sys.argv[2])
        raw["frames"] = tuple(raw["frames"])
        _serve(SMABenchConfig(**raw), Variant.parse(sys.argv[3]))
    else:
        sys.exit("internal worker entry point; run `python scripts/benchmark.py sma` instead")
