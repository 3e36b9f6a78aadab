"""Parts of the training loop (dosediff.train): data order, EMA, processes, validation."""
