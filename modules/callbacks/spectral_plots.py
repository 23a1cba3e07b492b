"""Pictures of what SAVE did: relative shift |δ|/σ per layer and singular-value spectra before/after.
Written as PNG into `<run>/plots` and logged to W&B."""
from __future__ import annotations

from pathlib import Path

import lightning as L


def plot_spectral_summary(summary: dict, out_dir: Path, title: str = "") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(summary)
    short = [n.replace("transformer_blocks.", "tb").replace("attentions.", "a").replace("_blocks.", "") for n in names]
    # ‖δ‖/‖σ‖: how far the spectrum moved, relative to its size (per-entry |δ|/σ explodes on
    # near-zero singular values, so it is not plotted)
    rel_norm = [float(s["delta"].norm() / s["sigma"].norm().clamp_min(1e-12)) for s in summary.values()]
    clipped = [float(((s["sigma"] + s["delta"]) < 0).float().mean()) for s in summary.values()]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 4))
    ax.bar(range(len(names)), rel_norm, color="#2c6fbb", label="‖δ‖ / ‖σ‖")
    ax2 = ax.twinx()
    ax2.plot(range(len(names)), clipped, "o", color="#d9534f", label="fraction σ+δ < 0 (ReLU-clipped)")
    ax2.set_ylabel("fraction clipped", color="#d9534f")
    ax2.set_ylim(0, max(0.05, max(clipped) * 1.2))
    ax.set_xticks(range(len(names)), short, rotation=90, fontsize=6)
    ax.set_ylabel("relative spectral shift ‖δ‖/‖σ‖")
    ax.set_title(f"Spectral shift per query layer {title}")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7)
    fig.tight_layout()
    p1 = out_dir / "spectral_shift_per_layer.png"
    fig.savefig(p1, dpi=120)
    plt.close(fig)

    picks = names[:: max(1, len(names) // 4)][:4]
    fig, axes = plt.subplots(1, len(picks), figsize=(3.2 * len(picks), 3), squeeze=False)
    for ax, n in zip(axes[0], picks):
        s = summary[n]
        ax.semilogy(s["sigma"].numpy(), label="σ (base)")
        ax.semilogy(s["shifted"].numpy().clip(1e-8), "--", label="ReLU(σ+δ)")
        ax.set_title(n.split(".transformer_blocks")[0] + "…" + n[-8:], fontsize=7)
        ax.set_xlabel("index")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    p2 = out_dir / "singular_values_before_after.png"
    fig.savefig(p2, dpi=120)
    plt.close(fig)
    return [p1, p2]


class SpectralPlots(L.Callback):
    def on_train_end(self, trainer, pl_module):
        if trainer.global_rank != 0 or not hasattr(pl_module, "spectral_summary"):
            return
        summary = pl_module.spectral_summary()
        if not summary:
            return
        lam = getattr(pl_module.hparams, "spectral_lambda", "")
        paths = plot_spectral_summary(summary, Path(trainer.default_root_dir) / "plots", f"(λ={lam})")
        from modules.callbacks.video_logger import wandb_logger

        wb = wandb_logger(trainer)
        if wb is not None:
            import wandb

            # through the logger's step key: an explicit W&B step behind its own counter drops the row
            wb.log_metrics({f"plots/{p.stem}": wandb.Image(str(p)) for p in paths}, step=trainer.global_step)
        print(f"[plots] {', '.join(str(p) for p in paths)}")
