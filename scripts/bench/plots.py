"""Plots of benchmark JSON files."""
from __future__ import annotations

from pathlib import Path


def plot_stem_layers(out: dict, path: str | Path) -> Path:
    """Log-log time vs token count of one self-attention layer, one line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layer = out["layer"]
    tokens = sorted(layer, key=int)
    modes = [m for m in layer[tokens[0]] if isinstance(layer[tokens[0]][m], dict)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in modes:
        xs = [int(t) for t in tokens if m in layer[t]]
        ys = [layer[t][m]["seconds"] for t in tokens if m in layer[t]]
        ax.loglog(xs, ys, marker="o", label=m, linestyle="--" if m.startswith("stem") else "-")
    ax.set_xlabel("tokens (frames × H × W) at 320 channels, 8 heads")
    ax.set_ylabel("seconds per layer call (CPU, fp32)")
    ax.set_title("Self-attention cost vs video length")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
