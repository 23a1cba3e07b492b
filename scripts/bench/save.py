"""SAVE benchmark: spectral shifts vs full query fine-tuning vs LoRA on the SD1.5 UNet architecture.

For each adapter variant (`spectral`, `full_query`, `lora` rank 4 on the same `to_q` layers; the
temporal attention trains in all three) it reports trainable parameters (query-only and total),
optimiser-state bytes, step time, peak RSS and the exported file sizes.

A step is one `SAVEModule.training_step` (diffusion loss + spectral regulariser) + backward +
`AdamW.step` from `SAVEModule.configure_optimizers`, on cached random latents `(B, 4, F, H, W)` and
random text embeddings `(L, 768)`, so only the UNet is measured.

Measurement protocol (CPU timings are noisy on a shared machine, so ratios come from one run):
- each variant lives in its own long-lived worker process (`isolate=True`; loaded once, one at a
  time), so peak RSS is per variant: the process's high-water mark reset after the model is built
  (`/proc/self/clear_refs`), i.e. resident model + training; `process_peak_rss_bytes` (`ru_maxrss`)
  also includes loading. Workers hand freed heap back to the OS after each step (`malloc_trim`) so the
  idle ones hold only their tensors;
- every variant does `warmup` untimed steps, then the parent drives `rounds` rounds round-robin with a
  rotating order (`steps` timed steps per variant per round); `step_time_s` is the median over all
  timed steps of a variant and the step-time ratio is the median of the per-round ratios
  spectral / full_query.
`isolate=False` runs the same protocol with all variants resident in one process (smoke test).

The SD1.5 architecture with random weights (`sd15-random`) is built once into the cache folder
(`$VIDTUNE_CACHE` or `~/.cache/vidtune`, `sd15-random/`) in diffusers layout, with a tiny VAE and a
tiny 768-wide text encoder (neither runs in the benchmark). Nothing of it is committed.

Run it with `python scripts/benchmark.py save [--out benchmarks]`.
"""
from __future__ import annotations

import gc
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("spectral", "full_query", "lora")
SD15_RANDOM = "sd15-random"
SD15_RANDOM_ID = "sd15-random-v1"
SD15_UNET_PARAMS = 859_520_964  # the released SD1.5 UNet
PROMPT = "a photo of an astronaut"

# Targets from the issue.
QUERY_PARAM_RATIO_MAX = 1 / 900  # spectral / full_query trainable query parameters
EXPORT_BYTES_MAX = 150_000  # δ export file, 150 kB
STEP_TIME_RATIO_MAX = 1.05  # spectral / full_query, median of alternating rounds


@dataclass
class BenchConfig:
    model: str = SD15_RANDOM  # `sd15-random`, a preset (`tiny-sd`) or a diffusers folder
    frames: int = 8
    size: int = 32  # latent height = width
    batch: int = 1
    warmup: int = 1  # untimed steps per variant, before the rounds
    steps: int = 1  # timed steps per variant in each round
    rounds: int = 3
    lora_rank: int = 4
    seed: int = 0
    isolate: bool = True  # one worker process per variant (else all variants in this process)
    threads: int = 0  # torch intra-op threads in the measuring process; 0 = torch's default
    timeout_s: float = 1800.0  # per subprocess


# -- the SD1.5 architecture with random weights -------------------------------------------------
def sd15_unet_config() -> dict:
    """Stable Diffusion 1.5's UNet config (diffusers `unet/config.json` of the released model)."""
    return dict(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
        center_input_sample=False, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0,
        mid_block_scale_factor=1,
    )


def architecture_summary(unet_dir: str | Path) -> dict:
    """Parameter count and query layers of a saved UNet, built on the meta device (no weights read)."""
    from diffusers import UNet2DConditionModel

    from modules.adapters.export import query_layer_names

    config = UNet2DConditionModel.load_config(str(unet_dir))
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    mods = dict(unet.named_modules())
    queries = query_layer_names(unet)
    return {
        "unet_params": sum(p.numel() for p in unet.parameters()),
        "query_layers": len(queries),
        "query_weight_params": sum(mods[n].weight.numel() for n in queries),
        "query_spectral_params": sum(min(mods[n].weight.shape) for n in queries),
        "cross_attention_dim": config["cross_attention_dim"],
        "block_out_channels": list(config["block_out_channels"]),
    }


def build_sd15_random(path: str | Path | None = None, seed: int = 0) -> Path:
    """SD1.5's UNet with random weights + tiny VAE + tiny text encoder of hidden size 768 (77 tokens),
    saved once in diffusers layout so `load_parts(path)` loads it like a downloaded model."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from modules.models.tiny import cache_dir, save_once, sd_scheduler, tiny_text_encoder
    from modules.models.tokenizer import build_word_tokenizer

    path = Path(path) if path else cache_dir() / SD15_RANDOM

    def build(tmp: Path) -> dict:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**sd15_unet_config())
        unet.save_pretrained(tmp / "unet")
        del unet
        gc.collect()
        summary = architecture_summary(tmp / "unet")
        if abs(summary["unet_params"] - SD15_UNET_PARAMS) > 0.01 * SD15_UNET_PARAMS or summary["query_layers"] != 32:
            raise RuntimeError(f"the built UNet is not SD1.5-shaped: {summary}")
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            norm_num_groups=8, sample_size=32,
        )
        vae.save_pretrained(tmp / "vae")
        tokenizer = build_word_tokenizer(max_length=77)
        tiny_text_encoder(len(tokenizer), hidden=768, max_len=77, seed=seed).save_pretrained(tmp / "text_encoder")
        tokenizer.save_pretrained(tmp / "tokenizer")
        sd_scheduler().save_pretrained(tmp / "scheduler")
        return {"_name_or_path": SD15_RANDOM_ID}

    return save_once(path, build)  # atomic; another process's complete copy wins


def resolve_bench_model(model: str) -> Path:
    from modules.models.loading import resolve_model_path

    if model == SD15_RANDOM:
        return build_sd15_random()
    return resolve_model_path(model)


# -- measurements --------------------------------------------------------------------------------
def _proc_status_bytes(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux ≥ 4.0); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    hwm, rss = _proc_status_bytes("VmHWM"), _proc_status_bytes("VmRSS")
    return hwm is not None and rss is not None and hwm <= rss + (64 << 20)


def ru_maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def param_counts(module: torch.nn.Module) -> dict[str, int]:
    out = {"trainable_params": 0, "query_trainable_params": 0, "temporal_trainable_params": 0}
    for n, p in module.named_parameters():
        if p.requires_grad:
            out["trainable_params"] += p.numel()
            out["temporal_trainable_params" if ".temporal." in n else "query_trainable_params"] += p.numel()
    return out


def optimizer_state_bytes(opt: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes of optimiser state tensors, in total and for the non-temporal (query/adapter) groups."""
    total = query = 0
    for group in opt.param_groups:
        for p in group["params"]:
            n = sum(v.numel() * v.element_size() for v in opt.state.get(p, {}).values() if torch.is_tensor(v))
            total += n
            if group.get("name") != "temporal":
                query += n
    return {"optimizer_state_bytes": total, "query_optimizer_state_bytes": query}


def tensor_bytes(module: torch.nn.Module) -> int:
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def synthetic_batch(module, cfg: BenchConfig) -> dict:
    """Random latents put in the module's cache and the prompt encoded once (the spec caches it), so
    `training_step` runs the UNet only (no VAE encode, no text encoder)."""
    unet_cfg = module.video_unet.config
    g = torch.Generator().manual_seed(cfg.seed)
    dtype = module.video_unet.dtype
    for i in range(cfg.batch):
        module._latents[i] = torch.randn(1, unet_cfg.in_channels, cfg.frames, cfg.size, cfg.size, generator=g).to(dtype)
    module.spec.encode_prompt([PROMPT])  # cached by the spec: training steps reuse it
    return {"index": torch.arange(cfg.batch), "prompt": [PROMPT] * cfg.batch}


def train_step(module, opt: torch.optim.Optimizer, batch: dict) -> float:
    """forward + backward + optimizer.step of SAVEModule's training loss."""
    opt.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # `self.log` without a Trainer
        loss = module.training_step(batch, 0)
    loss.backward()
    opt.step()
    return float(loss.detach())


def release_free_memory() -> None:
    """Return freed heap memory to the OS (glibc), so an idle worker's RSS is its resident tensors."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class VariantSession:
    """One SAVEModule variant ready to step: built, optimiser made, batch cached, RSS peak reset."""

    def __init__(self, cfg: BenchConfig, adapter: str):
        from modules.save import SAVEModule

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.cfg, self.adapter = cfg, adapter
        model_path = resolve_bench_model(cfg.model)
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed)
        # Setup (not timed) runs single-threaded: on a loaded CPU, MKL's OpenMP SVD of the spectral
        # layers stalls in thread barriers (a 1280x1280 SVD: ~60 s with 2 threads vs ~2 s with 1).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self.module = SAVEModule(model=str(model_path), adapter=adapter, temporal="full",
                                     lora_rank=cfg.lora_rank, seed=cfg.seed)
        finally:
            torch.set_num_threads(threads)
        self.module.train()
        self.opt = self.module.configure_optimizers()
        self.batch = synthetic_batch(self.module, cfg)
        release_free_memory()
        self.info = {"adapter": adapter, "setup_s": time.perf_counter() - t0, "torch_threads": torch.get_num_threads(),
                     **param_counts(self.module), "model_tensor_bytes": tensor_bytes(self.module),
                     "rss_after_setup_bytes": _proc_status_bytes("VmRSS"),
                     "process_peak_rss_setup_bytes": ru_maxrss_bytes()}
        self.peak_reset = reset_peak_rss()

    def step(self) -> dict:
        c, t = time.process_time(), time.perf_counter()
        loss = train_step(self.module, self.opt, self.batch)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        release_free_memory()  # outside the timed region; lets idle workers coexist
        return {"time_s": dt, "cpu_s": dc, "loss": loss}

    def finish(self, export: bool) -> dict:
        from modules.adapters.export import FILES

        res = dict(self.info)
        res["peak_rss_reset"] = self.peak_reset
        res["process_peak_rss_bytes"] = ru_maxrss_bytes()
        res["peak_rss_bytes"] = _proc_status_bytes("VmHWM") if self.peak_reset else res["process_peak_rss_bytes"]
        res.update(optimizer_state_bytes(self.opt))
        if export:  # after the RSS reading: serialising allocates
            with tempfile.TemporaryDirectory(prefix="vidtune-bench-export-") as tmp:
                out = self.module.export(tmp)
                sizes = {f.name: f.stat().st_size for f in Path(out).iterdir()}
            res["export_files"] = sizes
            res["export_bytes"] = sizes[FILES[self.adapter]]
            res["temporal_export_bytes"] = sizes.get(FILES["temporal"], 0)
        return res


class LocalRunner:
    """A variant in this process (`isolate=False`: all variants resident in one process)."""

    def __init__(self, cfg: BenchConfig, adapter: str):
        self.session = VariantSession(cfg, adapter)
        self.info = self.session.info

    def step(self) -> dict:
        return self.session.step()

    def finish(self, export: bool) -> dict:
        return self.session.finish(export)

    def close(self) -> None:
        self.session = None


class ProcessRunner:
    """A variant in its own long-lived worker process (`bench.workers.WorkerProcess`), so its peak RSS
    is its own while the variants still alternate step by step."""

    def __init__(self, cfg: BenchConfig, adapter: str):
        from bench.workers import WorkerProcess

        self.worker = WorkerProcess("bench.save", [json.dumps(asdict(cfg)), adapter], adapter, cfg.timeout_s)
        self.info = self.worker.recv()

    def step(self) -> dict:
        return self.worker.call("step")

    def finish(self, export: bool) -> dict:
        return self.worker.call("finish", export=export)

    def close(self) -> None:
        self.worker.close()


def _serve(cfg: BenchConfig, adapter: str) -> None:
    """Worker side of `ProcessRunner`: answers `step` / `finish` commands read from stdin."""
    from functools import partial

    from bench.workers import answer

    channel = sys.stdout
    sys.stdout = sys.stderr  # library prints must not mix with the answers
    send = partial(answer, channel)

    session = VariantSession(cfg, adapter)
    send(session.info)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "step":
            send(session.step())
        elif cmd["op"] == "finish":
            send(session.finish(cmd["export"]))
            return
        else:
            raise ValueError(f"unknown command {cmd!r}")


# -- the run -------------------------------------------------------------------------------------
def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def run_save_benchmark(cfg: BenchConfig, out_dir: str | Path = "benchmarks",
                       log: Callable[[str], None] = print) -> dict:
    """All variants in one run, alternating round-robin; writes `save.json` and `save.md` in `out_dir`."""
    if cfg.rounds < 1 or cfg.steps < 1 or cfg.warmup < 0:
        raise ValueError(f"need rounds >= 1, steps >= 1, warmup >= 0 (got {cfg})")
    if cfg.rounds * cfg.steps < 3:
        log(f"note: {cfg.rounds * cfg.steps} timed step(s) per variant; the issue's protocol asks for >= 3")
    start = time.perf_counter()
    load_start = os.getloadavg()
    model_path = resolve_bench_model(cfg.model)
    arch = architecture_summary(model_path / "unet")
    log(f"model {cfg.model} ({model_path}): {arch['unet_params'] / 1e6:.1f}M UNet params, "
        f"{arch['query_layers']} query layers; {cfg.frames} frames x {cfg.size}x{cfg.size} latents, batch {cfg.batch}")
    make = ProcessRunner if cfg.isolate else LocalRunner
    runners: dict[str, LocalRunner | ProcessRunner] = {}
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu_times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    losses: dict[str, list[float]] = {v: [] for v in VARIANTS}
    rounds, finals = [], {}
    try:
        for v in VARIANTS:  # one at a time: loading is the memory-hungry part
            runners[v] = make(cfg, v)
            info = runners[v].info
            log(f"{v:>10}: ready in {info['setup_s']:.1f} s, {info['trainable_params']:,} trainable params "
                f"({info['query_trainable_params']:,} query), RSS {(info['rss_after_setup_bytes'] or 0) / 1e9:.2f} GB")
        for v in VARIANTS:
            for _ in range(cfg.warmup):
                s = runners[v].step()
                losses[v].append(s["loss"])
                log(f"{v:>10}: warm-up step {s['time_s']:.2f} s, loss {s['loss']:.4f}")
        for r in range(cfg.rounds):
            order = VARIANTS[r % len(VARIANTS):] + VARIANTS[: r % len(VARIANTS)]
            row = {"order": list(order), "step_time_s": {}, "step_cpu_s": {}, "loadavg": list(os.getloadavg())}
            for v in order:
                ts, cs = [], []
                for _ in range(cfg.steps):
                    s = runners[v].step()
                    ts.append(s["time_s"])
                    cs.append(s["cpu_s"])
                    losses[v].append(s["loss"])
                times[v] += ts
                cpu_times[v] += cs
                row["step_time_s"][v] = _median(ts)
                row["step_cpu_s"][v] = _median(cs)
                log(f"round {r + 1}/{cfg.rounds} {v:>10}: step {row['step_time_s'][v]:.2f} s "
                    f"(CPU {row['step_cpu_s'][v]:.2f} s)")
            row["ratio_spectral_full_query"] = row["step_time_s"]["spectral"] / row["step_time_s"]["full_query"]
            row["cpu_ratio_spectral_full_query"] = row["step_cpu_s"]["spectral"] / row["step_cpu_s"]["full_query"]
            rounds.append(row)
        for v in VARIANTS:
            finals[v] = runners[v].finish(export=True)
            runners.pop(v).close()
            release_free_memory()
    finally:
        for runner in runners.values():
            runner.close()

    variants = {}
    for v in VARIANTS:
        f = finals[v]
        variants[v] = {
            "trainable_params": f["trainable_params"],
            "query_trainable_params": f["query_trainable_params"],
            "temporal_trainable_params": f["temporal_trainable_params"],
            "optimizer_state_bytes": f["optimizer_state_bytes"],
            "query_optimizer_state_bytes": f["query_optimizer_state_bytes"],
            "step_time_s": _median(times[v]),
            "step_times_s": times[v],
            "step_cpu_s": _median(cpu_times[v]),
            "step_cpu_times_s": cpu_times[v],
            "peak_rss_bytes": f["peak_rss_bytes"],
            "peak_rss_isolated": cfg.isolate,
            "peak_rss_excludes_loading": f["peak_rss_reset"],
            "process_peak_rss_bytes": f["process_peak_rss_bytes"],
            "rss_after_setup_bytes": f["rss_after_setup_bytes"],
            "model_tensor_bytes": f["model_tensor_bytes"],
            "export_bytes": f["export_bytes"],
            "temporal_export_bytes": f["temporal_export_bytes"],
            "export_files": f["export_files"],
            "setup_s": f["setup_s"],
            "losses": losses[v],
        }
    ratio = _median([r["ratio_spectral_full_query"] for r in rounds])
    result = {
        "benchmark": "save",
        "config": asdict(cfg),
        "model": {"name": cfg.model, "path": str(model_path), **arch},
        "environment": {
            "torch": torch.__version__, "torch_threads": finals["spectral"]["torch_threads"],
            "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()),
        },
        "variants": variants,
        "rounds": rounds,
        "step_time_ratio_spectral_full_query": ratio,
        "step_cpu_ratio_spectral_full_query": _median([r["cpu_ratio_spectral_full_query"] for r in rounds]),
        "targets": evaluate_targets(variants, ratio),
        "wall_time_s": time.perf_counter() - start,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "save.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown_report(result)
    (out / "save.md").write_text(md)
    log(md)
    log(f"wrote {out / 'save.json'} and {out / 'save.md'}")
    return result


def evaluate_targets(variants: dict, step_ratio: float) -> dict:
    s, f = variants["spectral"], variants["full_query"]
    q_ratio = s["query_trainable_params"] / f["query_trainable_params"]
    return {
        "query_params_ratio": {"value": q_ratio, "limit": QUERY_PARAM_RATIO_MAX,
                               "met": q_ratio <= QUERY_PARAM_RATIO_MAX,
                               "what": "spectral / full_query trainable query parameters <= 1/900"},
        "export_bytes": {"value": s["export_bytes"], "limit": EXPORT_BYTES_MAX,
                         "met": s["export_bytes"] <= EXPORT_BYTES_MAX,
                         "what": "spectral δ export file <= 150 kB"},
        "step_time_ratio": {"value": step_ratio, "limit": STEP_TIME_RATIO_MAX, "met": step_ratio <= STEP_TIME_RATIO_MAX,
                            "what": "step time spectral / full_query <= 1.05 (median of per-round ratios)"},
        "peak_rss": {"value": s["peak_rss_bytes"], "limit": f["peak_rss_bytes"],
                     "met": s["peak_rss_bytes"] <= f["peak_rss_bytes"], "what": "peak RSS spectral <= full_query"},
    }


def _bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def markdown_report(result: dict) -> str:
    cfg, model = result["config"], result["model"]
    lines = [
        f"# SAVE benchmark ({model['name']}: {model['unet_params'] / 1e6:.1f}M UNet params, "
        f"{model['query_layers']} query layers)", "",
        f"{cfg['frames']} frames x {cfg['size']}x{cfg['size']} latents, batch {cfg['batch']}, fp32 CPU, "
        f"{result['environment']['torch_threads']} threads; {cfg['rounds']} alternating rounds x "
        f"({cfg['warmup']} warm-up + {cfg['steps']} timed) steps per variant"
        + (", one worker process per variant" if cfg["isolate"] else ", all variants in one process") + ".", "",
        "| variant | trainable params (query) | trainable params (total) | optimizer state | step time (median) "
        "| peak RSS | export (adapter) | export (temporal) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v, r in result["variants"].items():
        lines.append(
            f"| {v} | {r['query_trainable_params']:,} | {r['trainable_params']:,} "
            f"| {_bytes(r['optimizer_state_bytes'])} "
            f"| {r['step_time_s']:.3f} s | {_bytes(r['peak_rss_bytes'])} | {_bytes(r['export_bytes'])} "
            f"| {_bytes(r['temporal_export_bytes'])} |"
        )
    ratios = ", ".join(f"{r['ratio_spectral_full_query']:.3f}" for r in result["rounds"])
    env = result["environment"]
    lines += ["", f"Step-time ratio spectral / full_query per round: {ratios}; median "
              f"{result['step_time_ratio_spectral_full_query']:.3f}"]
    if "step_cpu_ratio_spectral_full_query" in result:
        cpu = ", ".join(f"{r['cpu_ratio_spectral_full_query']:.3f}" for r in result["rounds"])
        lines[-1] += (f" (process CPU time per step: {cpu}; median "
                      f"{result['step_cpu_ratio_spectral_full_query']:.3f})")
    lines += ["", f"Machine load average {env['loadavg_start'][0]:.1f} at the start, {env['loadavg_end'][0]:.1f} at "
              f"the end, on {env['cpu_count']} CPUs (shared: wall times are noisy, ratios come from alternating "
              "rounds).", "",
              "| target | value | limit | met |", "|---|---:|---:|:---:|"]
    t = result["targets"]
    fmt = {
        "query_params_ratio": lambda x: f"1/{1 / x:,.0f}" if x else "0",
        "export_bytes": _bytes, "step_time_ratio": lambda x: f"{x:.3f}", "peak_rss": _bytes,
    }
    for k, tgt in t.items():
        lines.append(f"| {tgt['what']} | {fmt[k](tgt['value'])} | {fmt[k](tgt['limit'])} | "
                     f"{'yes' if tgt['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        _serve(BenchConfig(**json.loads(sys.argv[2])), sys.argv[3])
    else:
        sys.exit("internal worker entry point; run `python scripts/benchmark.py save` instead")
