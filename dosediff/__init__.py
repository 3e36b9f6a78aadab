"""dosediff: distance-aware conditional diffusion for radiotherapy dose prediction."""

__version__ = "0.1.0"
