"""python -m music2video: the music2video command."""

from .cli import run

if __name__ == "__main__":
    run()
