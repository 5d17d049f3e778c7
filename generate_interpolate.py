"""Make a music video cut at lyric lines, text then audio:
python generate_interpolate.py -ap song.mp3 -lyr lyrics.csv"""

import os
import sys

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning at barriers, which
# made CPU steps several times slower on a machine shared with other programs (BENCHMARKS.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from music2video.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("interpolate"))
