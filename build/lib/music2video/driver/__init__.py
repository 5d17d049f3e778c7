"""Which work runs where, and what is written down: the run folder, workers, batches."""
