"""The plot SMA's local term is about: amplitude spectra of the reference clip's motion vectors and of
the tuned model's prediction, at the first validation batch of each validation run. PNG into
`<run>/plots/motion_spectra_step<N>.png`, logged to W&B as `plots/motion_spectra`. Added by the SMA
hosts themselves (`configure_callbacks`)."""
from __future__ import annotations

from pathlib import Path

import lightning as L


def plot_motion_spectra(spectra: dict, path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
    logs = {k: spectra[k].clamp_min(1e-6).log10().numpy() for k in ("true", "pred")}
    lo, hi = min(v.min() for v in logs.values()), max(v.max() for v in logs.values())
    for ax, key, name in ((axes[0], "true", "reference |Δz0|"), (axes[1], "pred", "prediction |Δx̂0|")):
        im = ax.imshow(logs[key], cmap="magma", vmin=lo, vmax=hi)
        ax.set_title(f"log10 amplitude spectrum, {name}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[:2].tolist(), shrink=0.8)
    ax = axes[2]
    ax.semilogy(spectra["radial_true"].numpy(), "o-", label="reference")
    ax.semilogy(spectra["radial_pred"].numpy(), "s--", label="prediction")
    ax.set_xlabel("spatial frequency (radius from the zero frequency)")
    ax.set_ylabel("mean amplitude")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


class MotionSpectraPlot(L.Callback):
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx != 0 or trainer.global_rank != 0 or trainer.sanity_checking:
            return
        spectra = pl_module.motion_spectra(batch)
        path = Path(trainer.default_root_dir) / "plots" / f"motion_spectra_step{trainer.global_step:06d}.png"
        plot_motion_spectra(spectra, path, f"motion vectors at t = T/2, step {trainer.global_step}")
        from modules.callbacks.video_logger import wandb_logger

        wb = wandb_logger(trainer)
        if wb is not None:
            import wandb

            wb.log_metrics({"plots/motion_spectra": wandb.Image(str(path))}, step=trainer.global_step)
        print(f"[plots] {path}")
