"""`python -m music2video.tiny DIR` writes the tiny models: see music2video/testing/tiny.py."""

from .testing.tiny import main

if __name__ == "__main__":
    main()
