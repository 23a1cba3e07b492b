"""White vs Gaussian-process noise side by side, with their empirical autocorrelation.

    .venv/bin/python scripts/gp_noise_picture.py [--out assets/results/gp_noise.png] [--side 64] [--draws 64]

Left: one channel of white noise and of GP noise (`modules/noise/gp.py`, J = 3000, ℓ = 2/(π·R)) on an
R×R latent grid. Right: their autocorrelation along a row at 0..8 pixels, averaged over `--draws`
independent draws, against the covariance of the truncated spectrum (and the untruncated squared
exponential exp(−(πd/2)²/2)). Prints the numbers it plots (seconds on CPU).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from modules.noise.gp import GPNoise, covariance, default_lengthscale  # noqa: E402


def autocorrelation(x: torch.Tensor, max_lag: int) -> list[float]:
    """Row autocorrelation of `(n, R, R)` fields at lags 0..max_lag (pooled over fields and rows)."""
    x = x.double()
    var = x.pow(2).mean()
    return [float((x[..., : x.shape[-1] - d] * x[..., d:]).mean() / var) for d in range(max_lag + 1)]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="assets/results/gp_noise.png")
    ap.add_argument("--side", type=int, default=64, help="latent side R")
    ap.add_argument("--draws", type=int, default=64, help="independent draws for the autocorrelation")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r, lags = args.side, 8
    g = torch.Generator().manual_seed(args.seed)
    white = torch.randn(args.draws, r, r, generator=g)
    gp = GPNoise.draw(args.draws, r, g).grid(r, r)
    ell = default_lengthscale(r)
    res = {
        "lags": list(range(lags + 1)),
        "white": autocorrelation(white, lags),
        "gp": autocorrelation(gp, lags),
        "gp_theory_truncated": [covariance(torch.tensor([d / r, 0.0]), ell).item() for d in range(lags + 1)],
        "gp_theory_untruncated": [math.exp(-(math.pi * d / 2) ** 2 / 2) for d in range(lags + 1)],
    }
    fig, ax = plt.subplots(1, 3, figsize=(11, 3.4), gridspec_kw={"width_ratios": [1, 1, 1.3]})
    for a, img, title in ((ax[0], white[0], "white noise"), (ax[1], gp[0], f"GP noise (J=3000, ℓ=2/(π·{r}))")):
        a.imshow(img.numpy(), cmap="gray", vmin=-3, vmax=3, interpolation="nearest")
        a.set_title(title)
        a.axis("off")
    ax[2].plot(res["lags"], res["white"], "o-", label="white (empirical)")
    ax[2].plot(res["lags"], res["gp"], "o-", label="GP (empirical)")
    ax[2].plot(res["lags"], res["gp_theory_truncated"], "k--", label="GP theory (2σ truncation)")
    ax[2].plot(res["lags"], res["gp_theory_untruncated"], ":", color="gray", label="exp(−(πd/2)²/2)")
    ax[2].axhline(0, color="gray", lw=0.5)
    ax[2].set_xlabel("lag (latent pixels)")
    ax[2].set_ylabel("autocorrelation")
    ax[2].set_title(f"row autocorrelation, {args.draws} draws of {r}×{r}")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    for k in ("white", "gp", "gp_theory_truncated", "gp_theory_untruncated"):
        print(f"{k:24s}", " ".join(f"{v:+.3f}" for v in res[k][:5]))
    print(f"-> {out}")
    return res


if __name__ == "__main__":
    main()
