"""Developer tools beside the package (not shipped to Ray workers): bench, gpureport."""
