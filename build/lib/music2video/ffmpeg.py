"""ffmpeg plumbing: the bundled binary, paths it reads literally, running it, and reading back
what it wrote (streams, frames, subtitles)."""

import re
import subprocess
from pathlib import Path

import numpy as np

from .errors import UserError


class VideoError(UserError, RuntimeError):
    """ffmpeg failed; str() carries ffmpeg's own message."""


def ffmpeg_exe() -> str:
    """The ffmpeg binary that ships with imageio-ffmpeg (no system ffmpeg needed)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_path(path: Path) -> str:
    """A path as an ffmpeg input or output: 'file:' keeps a name like 'a:b.mp3' from being read
    as protocol 'a'."""
    return f"file:{Path(path).absolute()}"


def encoders() -> frozenset:
    """Names of the encoders the ffmpeg binary has."""
    listing = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True,
                             text=True).stdout
    return frozenset(line.split()[1] for line in listing.splitlines()
                     if len(line.split()) > 1 and line.startswith(" "))


def stderr_tail(stderr: bytes | str, lines: int = 3) -> str:
    """The last lines of ffmpeg's stderr, joined on one line."""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    return " | ".join(text.strip().splitlines()[-lines:])


def run_ffmpeg(args: list[str], what: str, cwd: Path | None = None) -> None:
    """Runs ffmpeg with an argument list (in folder `cwd`); failures raise VideoError with
    ffmpeg's message."""
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    result = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
    if result.returncode != 0:
        raise VideoError(f"ffmpeg failed to {what}: {stderr_tail(result.stderr)}")


def probe(path: Path) -> dict:
    """Streams (video, audio and subtitle codecs), picture size and fps, from ffmpeg's report."""
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", ffmpeg_path(path)],
                            capture_output=True, text=True)
    report = result.stderr
    video = re.findall(r"Stream #\S+.*?: Video: (\w+).*?, (\d+)x(\d+)", report)
    audio = re.findall(r"Stream #\S+.*?: Audio: (\w+)", report)
    subtitle = re.findall(r"Stream #\S+.*?: Subtitle: (\w+)", report)
    fps = re.search(r"(\d+(?:\.\d+)?) fps", report)
    return {"video": [v[0] for v in video], "audio": audio, "subtitle": subtitle,
            "size": (int(video[0][1]), int(video[0][2])) if video else None,
            "fps": float(fps.group(1)) if fps else None}


def read_frames(path: Path):
    """The decoded RGB frames (H, W, 3) uint8 of a video, one at a time; VideoError when it
    cannot be decoded. The ffmpeg process is stopped and its pipes closed however the loop
    ends."""
    size = probe(path)["size"]
    if size is None:
        raise VideoError(f"cannot read video {path}: ffmpeg finds no video stream in it")
    width, height = size
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", ffmpeg_path(path),
           "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        try:
            while len(data := proc.stdout.read(width * height * 3)) == width * height * 3:
                yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
        finally:
            proc.kill()


def count_decoded(path: Path) -> int:
    """The frames of a video's first video stream, decoded to the end; VideoError when any of
    it does not decode (a truncated or damaged file)."""
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-xerror",
           "-i", ffmpeg_path(path), "-map", "0:v:0", "-f", "null", "-progress", "pipe:1", "-"]
    result = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    counts = re.findall(r"^frame=(\d+)$", result.stdout, re.MULTILINE)
    if result.returncode != 0 or not counts:
        raise VideoError(f"cannot decode {path}: {stderr_tail(result.stderr, 1) or 'no video frames'}")
    return int(counts[-1])


def count_frames(path: Path) -> tuple[int, float]:
    """Decoded video frames of a file and their duration in seconds."""
    import imageio_ffmpeg

    return imageio_ffmpeg.count_frames_and_secs(ffmpeg_path(path))


def read_subtitles(path: Path) -> str:
    """The first subtitle track of a file as SRT text, read back by ffmpeg."""
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", ffmpeg_path(path),
           "-map", "0:s:0", "-f", "srt", "-"]
    result = subprocess.run(cmd, capture_output=True)
    if result.returncode != 0:
        raise VideoError(f"ffmpeg failed to read the subtitles of {path}: {stderr_tail(result.stderr)}")
    return result.stdout.decode("utf-8")
