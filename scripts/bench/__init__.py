"""Benchmark harness code, run by `scripts/benchmark.py` (not part of the installed package):

- `save.py`: SAVE (spectral shifts) vs full query fine-tuning vs LoRA on the SD1.5 UNet architecture;
- `stem.py`: one self-attention layer per frame-context mode (STEM's EM bases vs frame attention);
- `stem_unet.py`: a whole SD1.5 UNet inversion step per mode, in alternating rounds;
- `families.py`: the loop's step vs the bare denoiser, per model family;
- `plots.py`: figures of the results.

Results (JSON, Markdown, plots) go to `benchmarks/`.
"""
