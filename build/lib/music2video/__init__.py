"""music2video: turn a song and its lyrics into a VQGAN-CLIP music video."""

__version__ = "0.2.0"
