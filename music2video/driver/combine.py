"""combine_mp4.py: re-join a run folder's chunks with the song, in segment order."""

import argparse
import sys
from pathlib import Path

from ..ffmpeg import VideoError
from ..files import RunError, check_writable, same_file
from ..output import storyboard, subtitles
from ..output.video import join
from .folder import RunFolder, check_outputs, saved_pictures


def get_parser() -> argparse.ArgumentParser:
    """The seed's concat.py flags, with defaults read from the run's manifest; named as it was
    called (combine_mp4.py, or the installed music2video-combine)."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir", nargs="?", type=Path, help="run folder (beside the -o picture)")
    p.add_argument("--dirs", type=Path, default=None, help="run folder (the seed's flag)")
    p.add_argument("--music", type=Path, default=None, help="song to mux in (default: the run's)")
    p.add_argument("--output", type=Path, default=None,
                   help="video to write (default: <run folder>.mp4 beside the run folder)")
    p.add_argument("--partial", action="store_true",
                   help="join the finished segments of an unfinished run; the song is cut to match")
    p.add_argument("--force", action="store_true",
                   help="mux a --music whose length differs from the run's song")
    p.add_argument("-ofps", "--output_video_fps", type=float, default=None,
                   help="motion-interpolate to this fps (default: the run's -ofps)")
    return p


def check_music_length(music: Path, manifest: dict) -> None:
    """Refuses a song whose length differs from the run's by more than a frame."""
    from ..song.audio import AudioError, load_audio

    sr = 16000
    try:
        seconds = len(load_audio(music, sr)) / sr
    except AudioError as err:
        raise RunError(str(err)) from None
    planned = manifest["segments"][-1]["end"]
    if abs(seconds - planned) > 1 / manifest["fps"]:
        raise RunError(f"--music {music} is {seconds:.2f} s long but the run's song is "
                       f"{planned:.2f} s ({seconds - planned:+.2f} s); give the run's song, or "
                       "add --force to mux it anyway")


def combine(run_dir: Path, music: Path | None, output: Path | None, partial: bool,
            interpolate_fps: float | None, force: bool = False) -> Path:
    """Joins the manifest's chunks in order with the song into one video.

    The video (and its subtitles and storyboard) go beside the run folder as <folder name>.mp4,
    or to `output`: never to a path the manifest names."""
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise RunError(f"{run_dir} is not a folder; give the run folder that generate.py made "
                       "beside its -o picture")
    manifest = folder.read()
    if manifest is None:
        raise RunError(f"{run_dir} holds no {folder.manifest_path.name}; give the run folder "
                       "that generate.py made beside its -o picture")
    chunks = folder.finished_chunks(manifest, partial)
    prefix = folder.finished_prefix(manifest)
    if not chunks or (partial and not prefix):
        raise RunError(f"{run_dir}: no finished segment to join yet")
    song = Path(manifest.get("audio_path", ""))
    if music is not None and not force:
        check_music_length(Path(music), manifest)
    music = Path(music or song)
    if not music.is_file():
        raise RunError(f"song not found: {music}; pass it with --music")
    seconds = manifest["segments"][prefix - 1]["frame_end"] / manifest["fps"]
    fps = manifest.get("output_video_fps", 0) if interpolate_fps is None else interpolate_fps
    if output is None:
        folder.check_video(manifest)
    output = Path(output or folder.video)
    if same_file(output, music):
        raise RunError(f"--output {output} is the song itself; choose another --output")
    check_writable(output.parent)
    cues = subtitles.clip([subtitles.Cue(**c) for c in manifest.get("cues", [])], seconds)
    written = {"video": output, "storyboard": storyboard.storyboard_path(output),
               **({"subtitles": subtitles.srt_path(output)} if cues else {})}
    check_outputs(folder, written, overwrite=output != folder.video)
    srt = subtitles.write_srt(subtitles.srt_path(output), cues) if cues else None
    join(chunks, music, output, fps, audio_seconds=seconds if partial else None,
         video_seconds=seconds, subtitles=None if manifest.get("burn_lyrics") else srt)
    rebuild(folder.path, manifest, folder.done(), storyboard.storyboard_path(output),
                       song.name)
    return output


def main(argv=None) -> int:
    """Command line; problems are one stderr line and exit code 1, Ctrl-C one line and 130
    (ffmpeg stopped, no temporary file left, no final file half-written)."""
    p = get_parser()
    args = p.parse_args(argv)
    run_dir = args.dirs or args.run_dir
    if run_dir is None:
        p.error(f"give the run folder, e.g. {p.prog} outputs/output")
    try:
        out = combine(run_dir, args.music, args.output, args.partial, args.output_video_fps,
                      args.force)
    except (RunError, VideoError) as err:
        print(f"{p.prog}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{p.prog}: interrupted; no half-written file is left: run the same command "
              "again to join", file=sys.stderr)
        return 130
    print(out)
    return 0


def rebuild(run_dir: Path, manifest: dict, done: set[int], out: Path, title: str = "") -> Path:
    """Writes a run folder's sheet from its saved thumbnails or chunks (for combine_mp4.py)."""
    board = storyboard.Storyboard(out, manifest["segments"], title)
    board.update(saved_pictures(run_dir, manifest, done))
    return board.write()
