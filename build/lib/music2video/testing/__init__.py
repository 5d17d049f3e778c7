"""No-download models and songs for tests, CI and the demo."""
