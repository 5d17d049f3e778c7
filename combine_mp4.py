"""Re-join a run's chunks with the song: python combine_mp4.py outputs/output"""

import sys

from music2video.driver.combine import main

if __name__ == "__main__":
    sys.exit(main())
