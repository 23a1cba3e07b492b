"""STEM inversion: EM bases over all video tokens and STEM self-attention."""

from .em import em_bases, stem_attention

__all__ = ["em_bases", "stem_attention"]
