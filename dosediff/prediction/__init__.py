"""Prediction internals: inputs (HDF5 -> normalised slices), sampling (DDIM / one pass,
samples, flip TTA) and outputs (original CT grid, NIfTI / RTDOSE, manifest).
The public entry is dosediff.predict."""
