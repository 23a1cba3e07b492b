"""FADE vs plain CFG editing: `python scripts/benchmark.py fade --out DIR` -> DIR/fade.json, DIR/fade.md.

Model: a CogVideoX transformer with the real depth (42 blocks) at reduced width (random weights;
`--heads` × 16-dim heads, text length 16, the tiny preset's T5 and scheduler), CPU, fp32, torch at
`--threads` (default 1). Clips: 9 and 13 *latent* frames (33 and 49 video frames — 49 is
CogVideoX's native length; 13 video frames is a count its VAE cannot round-trip), `--size` pixels
square. The edit is the whole FADE recipe on the latents: DDIM inversion (50 steps, empty prompt,
CFG 1) then 50 sampling steps with CFG 6, with FADEGuidance (4 sketching blocks, first 60% of steps)
or without; the VAE encode/decode, the same in both, is left out.

Time: process CPU time of each whole edit (wall time on a shared machine measures the other jobs),
variants alternating over `--rounds` rounds in one process; the ratio is the median of the
per-round FADE/plain ratios. Memory: each variant edits once in its own process; `peak_mem_*` is
that process's peak RSS (MB, model and interpreter included), `work_mem_*` the rise of the current
RSS (sampled every 2 ms) during the edit over its level just before (the edit's working memory);
`saved_for_backward_mb`: what autograd keeps for FADE's gradient pass, stopped after the sketching
blocks vs through all 42 blocks.
"""
from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
for _p in (REPO_ROOT, Path(__file__).resolve().parents[1]):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

VARIANTS = ("plain", "fade")


def model_changes(heads: int) -> dict:
    return {"num_layers": 42, "num_attention_heads": heads, "attention_head_dim": 16}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup(folder: str, latent_frames: int, size: int, steps: int, threads: int):
    import torch

    from modules.models.spec import load_model
    from modules.sampling import DDIMLoop

    torch.set_num_threads(threads)
    spec = load_model(folder)
    s = spec.vae_scale_factor
    c = spec.latent_channels
    z0 = torch.randn(1, c, latent_frames, size // s, size // s, generator=torch.Generator().manual_seed(0))
    null = spec.encode_prompt([""])
    src = spec.encode_prompt(["a photo of a cup of coffee"])
    edit = spec.encode_prompt(["a photo of a cup of tea"])

    def run(variant: str) -> float:
        from modules.callbacks.fade import FADEGuidance

        cbs = [FADEGuidance(n_sketch=4)] if variant == "fade" else []
        loop = DDIMLoop(spec, spec.scheduler, steps, cbs, progress=False)
        t0 = time.process_time()
        with torch.no_grad():
            inv = loop.invert(z0, null, uncond=null, guidance_scale=1.0)
            inv.cond = src
            loop.sample(inv.z, edit, uncond=null, guidance_scale=6.0, source=inv, label="edit")
        return time.process_time() - t0

    return run


def _current_rss_mb() -> float:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_worker(folder: str, variant: str, latent_frames: int, size: int, steps: int, threads: int) -> dict:
    """Peak RSS of the process, and the peak of the current RSS (sampled every 2 ms) during the edit
    above its level just before it (the edit's working memory)."""
    import threading

    run = _setup(folder, latent_frames, size, steps, threads)
    before = _current_rss_mb()
    top, done = [before], threading.Event()

    def sample():
        while not done.is_set():
            top[0] = max(top[0], _current_rss_mb())
            done.wait(0.002)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    run(variant)
    done.set()
    th.join()
    top[0] = max(top[0], _current_rss_mb())
    return {"peak_mem_mb": _rss_mb(), "work_mem_mb": top[0] - before}


def saved_for_backward_mb(folder: str, latent_frames: int, size: int) -> dict:
    """Bytes autograd keeps for FADE's gradient pass: stopped after the 4 sketching blocks vs the
    same gradient through all 42 blocks (the released code's backward)."""
    import torch

    from modules.fade import SketchFeatures, energy
    from modules.models.spec import load_model

    spec = load_model(folder)
    s = spec.vae_scale_factor
    z = torch.randn(1, spec.latent_channels, latent_frames, size // s, size // s, generator=torch.Generator().manual_seed(0))
    cond = spec.encode_prompt(["a photo of a cup of coffee"])
    grid = spec.token_grid(z.shape)
    out = {}
    with SketchFeatures(spec.network, 4) as sf:
        with torch.no_grad():
            ref = sf.run(spec, z + 0.1, 500, cond)
        for name, stop in (("early_stop", True), ("full_pass", False)):
            seen, total = set(), [0]

            def pack(t):
                key = (t.untyped_storage().data_ptr(), t.dtype)
                if key not in seen:
                    seen.add(key)
                    total[0] += t.untyped_storage().nbytes()
                return t

            zz = z.clone().requires_grad_(True)
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                g = energy(sf.run(spec, zz, 500, cond, stop=stop), ref, grid)
            torch.autograd.grad(g, zz)
            out[name] = total[0] / 2**20
    return out


def _in_worker(args: list[str]) -> dict:
    code = ("import json, sys; sys.path[:0] = [%r, %r]; from bench.fade import memory_worker; "
            "print('RESULT ' + json.dumps(memory_worker(*sys.argv[1:3], *map(int, sys.argv[3:]))))"
            % (str(REPO_ROOT), str(Path(__file__).resolve().parents[1])))
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker {args} failed:\n{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def run(out_dir: str | Path, frames=(9, 13), size: int = 64, heads: int = 4, steps: int = 50, rounds: int = 3,
        threads: int = 1) -> dict:
    import torch

    from bench.families import build_variant

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    result = {"config": {"blocks": 42, "heads": heads, "head_dim": 16, "width": heads * 16, "text_len": 16,
                         "latent_frames": list(frames), "video_frames": [(f - 1) * 4 + 1 for f in frames],
                         "size_px": size, "steps": steps, "rounds": rounds, "threads": threads, "device": "cpu",
                         "dtype": "float32", "n_sketch": 4, "guided_fraction": 0.6, "cfg": 6.0,
                         "clock": "process CPU time of inversion + sampling (VAE excluded)"},
              "frames": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_variant("tiny-cogvideox", model_changes(heads), Path(tmp))
        result["config"]["params"] = None
        for nf in frames:
            runner = _setup(folder, nf, size, steps, threads)
            if result["config"]["params"] is None:
                from modules.models.spec import load_model

                result["config"]["params"] = sum(p.numel() for p in load_model(folder).network.parameters())
            per_round = []
            for r in range(rounds):
                order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
                times = {v: runner(v) for v in order}
                per_round.append({**{f"{v}_s": times[v] for v in VARIANTS}, "ratio": times["fade"] / times["plain"]})
                print(f"  {nf} latent frames, round {r + 1}: plain {times['plain']:.2f} s, fade {times['fade']:.2f} s, "
                      f"ratio {per_round[-1]['ratio']:.3f}", flush=True)
            mem = {v: _in_worker([folder, v, str(nf), str(size), str(steps), str(threads)]) for v in VARIANTS}
            saved = saved_for_backward_mb(folder, nf, size)
            entry = {
                "fade_s": statistics.median(p["fade_s"] for p in per_round),
                "plain_s": statistics.median(p["plain_s"] for p in per_round),
                "ratio": statistics.median(p["ratio"] for p in per_round),
                "peak_mem_fade": mem["fade"]["peak_mem_mb"], "peak_mem_plain": mem["plain"]["peak_mem_mb"],
                "work_mem_fade": mem["fade"]["work_mem_mb"], "work_mem_plain": mem["plain"]["work_mem_mb"],
                "rounds": per_round,
                "saved_for_backward_mb": saved,
            }
            entry["mem_ratio"] = entry["peak_mem_fade"] / entry["peak_mem_plain"]
            entry["work_mem_ratio"] = entry["work_mem_fade"] / max(entry["work_mem_plain"], 1e-9)
            result["frames"][str(nf)] = entry
            print(f"{nf} latent frames: FADE/plain time {entry['ratio']:.3f}, peak RSS {entry['peak_mem_fade']:.0f} / "
                  f"{entry['peak_mem_plain']:.0f} MB, working memory {entry['work_mem_fade']:.1f} / "
                  f"{entry['work_mem_plain']:.1f} MB; kept for backward {saved['early_stop']:.2f} MB (early stop) vs "
                  f"{saved['full_pass']:.2f} MB (all 42 blocks)", flush=True)
    largest = result["frames"][str(max(frames))]
    for k in ("fade_s", "plain_s", "ratio", "peak_mem_fade", "peak_mem_plain"):
        result[k] = largest[k]  # the top-level figures: the longest clip
    result["wall_s"] = time.perf_counter() - t_start
    result["torch"] = torch.__version__
    (out_dir / "fade.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "fade.md").write_text(format_md(result))
    return result


def format_md(res: dict) -> str:
    c = res["config"]
    lines = [
        "# FADE vs plain CFG editing",
        "",
        f"CogVideoX transformer, 42 blocks at width {c['width']} ({c['heads']} heads × 16), random weights, "
        f"{c['params'] / 1e6:.2f} M parameters; {c['size_px']}×{c['size_px']} px; {c['steps']}-step DDIM inversion "
        f"+ {c['steps']}-step edit (CFG {c['cfg']}); FADE with {c['n_sketch']} sketching blocks over the first "
        f"{c['guided_fraction']:.0%} of steps; CPU, {c['threads']} thread(s), fp32; {c['clock']}. "
        f"Whole run {res['wall_s'] / 60:.1f} min wall.",
        "",
        "| latent frames (video) | plain s | FADE s | FADE/plain (median) | per-round ratios | peak RSS plain / FADE MB "
        "| working memory plain / FADE MB | kept for backward: early stop / full pass MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for nf, e in res["frames"].items():
        vf = (int(nf) - 1) * 4 + 1
        rr = ", ".join(f"{r['ratio']:.3f}" for r in e["rounds"])
        lines.append(f"| {nf} ({vf}) | {e['plain_s']:.1f} | {e['fade_s']:.1f} | {e['ratio']:.3f} | {rr} | "
                     f"{e['peak_mem_plain']:.0f} / {e['peak_mem_fade']:.0f} | "
                     f"{e['work_mem_plain']:.1f} / {e['work_mem_fade']:.1f} | "
                     f"{e['saved_for_backward_mb']['early_stop']:.2f} / {e['saved_for_backward_mb']['full_pass']:.2f} |")
    lines += ["", "Regenerate: `OMP_NUM_THREADS=1 python scripts/benchmark.py fade --out benchmarks`", ""]
    return "\n".join(lines)
