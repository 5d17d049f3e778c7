"""Make a music video cut on the song's beats (the seed's script; `music2video SONG` is the same):
python generate.py -ap song.mp3 -lyr lyrics.csv"""

import sys

from music2video.cli import main

if __name__ == "__main__":
    sys.exit(main("beats"))
