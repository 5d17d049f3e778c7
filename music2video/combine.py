"""combine_mp4.py: re-join a run folder's chunks with the song, in segment order."""

import argparse
import sys
from pathlib import Path

from .run import RunError, RunFolder
from .video import VideoError, join


def get_parser() -> argparse.ArgumentParser:
    """The seed's concat.py flags, with defaults read from the run's manifest."""
    p = argparse.ArgumentParser(prog="combine_mp4.py", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir", nargs="?", type=Path, help="run folder (beside the -o picture)")
    p.add_argument("--dirs", type=Path, default=None, help="run folder (the seed's flag)")
    p.add_argument("--music", type=Path, default=None, help="song to mux in (default: the run's)")
    p.add_argument("--output", type=Path, default=None, help="video to write (default: the run's)")
    p.add_argument("--partial", action="store_true",
                   help="join the finished segments of an unfinished run; the song is cut to match")
    p.add_argument("-ofps", "--output_video_fps", type=float, default=None,
                   help="motion-interpolate to this fps (default: the run's -ofps)")
    return p


def combine(run_dir: Path, music: Path | None, output: Path | None, partial: bool,
            interpolate_fps: float | None) -> Path:
    """Joins the manifest's chunks in order with the song into one video."""
    folder = RunFolder(run_dir)
    manifest = folder.read()
    if manifest is None:
        raise RunError(f"{run_dir} holds no {folder.manifest_path.name}; give the run folder "
                       "that generate.py made beside its -o picture")
    chunks = folder.finished_chunks(manifest, partial)
    done = manifest["segments"][: manifest["done"]]
    if not chunks or (partial and not done):
        raise RunError(f"{run_dir}: no finished segment to join yet")
    music = Path(music or manifest["audio_path"])
    if not music.is_file():
        raise RunError(f"song not found: {music}; pass it with --music")
    finished = done if partial else manifest["segments"]
    seconds = finished[-1]["frame_end"] / manifest["fps"]
    fps = manifest.get("output_video_fps", 0) if interpolate_fps is None else interpolate_fps
    return join(chunks, music, Path(output or manifest["video"]), fps,
                audio_seconds=seconds if partial else None, video_seconds=seconds)


def main(argv=None) -> int:
    """Command line; problems are one stderr line and exit code 1."""
    p = get_parser()
    args = p.parse_args(argv)
    run_dir = args.dirs or args.run_dir
    if run_dir is None:
        p.error("give the run folder, e.g. combine_mp4.py outputs/output")
    try:
        out = combine(run_dir, args.music, args.output, args.partial, args.output_video_fps)
    except (RunError, VideoError) as err:
        print(f"combine_mp4.py: error: {err}", file=sys.stderr)
        return 1
    print(out)
    return 0
