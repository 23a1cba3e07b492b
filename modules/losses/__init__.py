"""Method loss functions: pure, fp32 inside, unit-tested against independent oracles."""
