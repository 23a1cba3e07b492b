"""Noise families for training and sampling (`gp`: Gaussian-process noise by random Fourier features)."""
