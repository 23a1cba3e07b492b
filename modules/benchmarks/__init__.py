"""Benchmarks run by `scripts/benchmark.py` (`save`: SAVE vs its baselines on the SD1.5 UNet)."""
