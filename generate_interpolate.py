"""Make a music video cut at lyric lines, text then audio (the seed's script; `music2video SONG
--interpolate` is the same): python generate_interpolate.py -ap song.mp3 -lyr lyrics.csv"""

import sys

from music2video.cli import main

if __name__ == "__main__":
    sys.exit(main("interpolate"))
