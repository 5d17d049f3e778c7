"""Video: frames stream into ffmpeg as H.264 chunks, which are joined and muxed with the song."""

import contextlib
import os
import queue
import signal
import subprocess
import threading
import warnings
from pathlib import Path

import numpy as np

from ..ffmpeg import VideoError, encoders, ffmpeg_exe, ffmpeg_path, run_ffmpeg, stderr_tail
from ..files import part_path

CRF = 17  # the seed's quality
PRESET = "medium"  # the seed used veryslow: several times slower for a few percent of size
AUDIO_BITRATE = "192k"
MINTERPOLATE = "minterpolate=fps={fps}:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1"


def encoder_args() -> list[str]:
    """The H.264 settings every chunk shares, so chunks join without re-encoding."""
    return ["-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF), "-pix_fmt", "yuv420p"]


class FrameWriter:
    """Streams RGB frames into one H.264 mp4 through ffmpeg, from a writer thread.

    Frames are (H, W, 3) uint8 arrays or tensors on any device (a GPU frame is copied to the host
    on the writer thread, so the loop never waits for it); the file appears under its final name
    only when close() finishes it. With rename False, close() leaves the finished file under its
    temporary name (`part`), fsynced, for the caller to hand on: a worker's chunk that the
    driver moves into place."""

    def __init__(self, path: Path, width: int, height: int, fps: float, depth: int = 8,
                 rename: bool = True):
        self.path, self.part, self.rename = Path(path), part_path(Path(path)), rename
        self.shape, self.count = (height, width, 3), 0
        self.cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
                    "-r", f"{fps}", "-i", "-", *encoder_args(), "-an", "-f", "mp4",
                    ffmpeg_path(self.part)]
        self.proc: subprocess.Popen | None = None
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._drain, daemon=True)

    @property
    def target(self) -> Path:
        """The file this writer leaves: its final name, or (rename False) its temporary one."""
        return self.path if self.rename else self.part

    def start(self) -> "FrameWriter":
        """Starts ffmpeg and the writer thread (once); a Ctrl-C meanwhile stops both cleanly."""
        if self.proc is None:
            with held_interrupt() as caught:
                # Its own session: a Ctrl-C in the terminal reaches Python, which stops ffmpeg.
                self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE,
                                             stderr=subprocess.PIPE, start_new_session=True)
                self.thread.start()
            if caught:
                self.abort()
                raise KeyboardInterrupt
        return self

    def _drain(self) -> None:
        """Writer thread: pipes queued frames to ffmpeg until the None sentinel."""
        while (item := self.queue.get()) is not None:
            frame, repeat = item
            if self.error is None:
                try:
                    if hasattr(frame, "cpu"):  # a tensor, maybe on the GPU: copied off the loop
                        frame = frame.cpu()
                    data = np.ascontiguousarray(np.asarray(frame), dtype=np.uint8).tobytes()
                    for _ in range(repeat):
                        self.proc.stdin.write(data)
                except (BrokenPipeError, OSError) as err:
                    self.error = err

    def write(self, frame, repeat: int = 1) -> None:
        """Queues a frame to appear `repeat` times."""
        self.start()
        if self.error is not None:
            message = stderr_tail(self.proc.stderr.read()) if not self.proc.stderr.closed else ""
            self.abort()
            raise VideoError(f"ffmpeg stopped while writing {self.target}: "
                             f"{message or self.error}")
        if tuple(frame.shape) != self.shape:
            raise ValueError(f"frame of shape {tuple(frame.shape)}, expected {self.shape}")
        if repeat > 0:
            self.queue.put((frame, repeat))
            self.count += repeat

    def close(self) -> Path:
        """Finishes the file and moves it under its final name (returned; with rename False,
        the temporary one)."""
        try:
            return self._finish()
        except BaseException:
            self.abort()
            raise

    def _finish(self) -> Path:
        """Drains the queue, waits for ffmpeg and renames the file into place."""
        self.start()
        self.queue.put(None)
        self.thread.join()
        self.proc.stdin.close()
        stderr = self.proc.stderr.read()
        self.proc.stderr.close()
        if self.proc.wait() != 0 or self.error is not None:
            self.part.unlink(missing_ok=True)
            raise VideoError(f"ffmpeg failed to write {self.target}: {stderr_tail(stderr)}")
        if not self.rename:
            with open(self.part, "rb") as f:
                os.fsync(f.fileno())  # durable before the driver's journal names it
            return self.part
        os.replace(self.part, self.path)
        return self.path

    def abort(self) -> None:
        """Stops ffmpeg and removes the unfinished file."""
        if self.proc is None:
            return
        if self.thread.is_alive():
            self.error = self.error or InterruptedError()
            self.queue.put(None)
            self.thread.join()
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stderr):
            try:
                pipe.close()
            except OSError:  # a pipe whose reader is gone
                pass
        self.part.unlink(missing_ok=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


@contextlib.contextmanager
def held_interrupt():
    """Holds a Ctrl-C back while the block starts a process, so no process goes unwatched.

    Yields a list that is non-empty when a Ctrl-C came meanwhile."""
    caught: list = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield caught
    finally:
        signal.signal(signal.SIGINT, previous)


def chunks_folder(chunks: list[Path]) -> Path:
    """The deepest folder that holds every chunk: ffmpeg joins them from there."""
    return Path(os.path.commonpath([Path(c).resolve().parent for c in chunks]))


def concat_list(chunks: list[Path], path: Path, base: Path) -> Path:
    """Writes an ffmpeg concat list naming each chunk by its path below `base`, the folder
    ffmpeg is to run in (see chunks_folder).

    The list holds one name a line: only the names below `base` (a run's chunk_NNNNN.mp4) go in,
    never the folders above, whatever characters they hold. Each is a file: URL, so ffmpeg
    opens it from its working folder as it is spelt, and quoted as ffmpeg's concat demuxer
    reads it (a ' becomes '\\''). A line break cannot be written in the list: a name holding
    one is refused."""
    lines = ["ffconcat version 1.0"]
    for chunk in chunks:
        name = os.path.relpath(Path(chunk).resolve(), Path(base).resolve())
        if "\n" in name or "\r" in name:
            raise VideoError(f"cannot join chunk {name!r}: ffmpeg cannot list a name that holds "
                             "a line break; rename it")
        lines.append("file 'file:" + name.replace("'", "'\\''") + "'")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _nvenc_usable() -> bool:
    """Whether ffmpeg has NVENC and a CUDA GPU is there to run it."""
    import torch

    return torch.cuda.is_available() and "h264_nvenc" in encoders()


def _video_args(interpolate_fps: float, seconds: float | None) -> list[list[str]]:
    """Ways to write the joined video, best first: stream copy, or motion-interpolated.

    minterpolate needs a frame after the last one: the last frame is held briefly, and the
    result trimmed back to the video's length so the sound stays in sync."""
    if not interpolate_fps:
        return [["-c:v", "copy"]]
    chain = ["tpad=stop_mode=clone:stop=2", MINTERPOLATE.format(fps=interpolate_fps)]
    if seconds is not None:
        chain.append(f"trim=duration={seconds:.6f}")
    vf = ["-vf", ",".join(chain)]
    x264 = vf + encoder_args()
    nvenc = vf + ["-c:v", "h264_nvenc", "-b:v", "10M", "-pix_fmt", "yuv420p"]
    return [nvenc, x264] if _nvenc_usable() else [x264]


def subtitle_args(subtitles: Path | None) -> tuple[list[str], list[str]]:
    """Input and output arguments that add an SRT file as a soft mov_text track (input 2),
    shown by default and switchable off in players."""
    if subtitles is None:
        return [], []
    return (["-f", "srt", "-i", ffmpeg_path(subtitles)],
            ["-map", "2:s:0", "-c:s", "mov_text", "-metadata:s:s:0", "language=und",
             "-metadata:s:s:0", "handler_name=Lyrics", "-disposition:s:0", "default"])


def join(chunks: list[Path], audio: Path, out: Path, interpolate_fps: float = 0,
         audio_seconds: float | None = None, video_seconds: float | None = None,
         subtitles: Path | None = None) -> Path:
    """Joins chunks in order and adds the song as AAC; written to a temporary name, then renamed.

    `audio_seconds` trims the song (for joining a partial run); `video_seconds`, the chunks'
    length, keeps a motion-interpolated video exactly that long; `subtitles`, an SRT file, is
    added as a mov_text subtitle track (it is not trimmed: its cues should end within the video,
    see subtitles.clip)."""
    out = Path(out)
    missing = [Path(c).name for c in chunks if not Path(c).is_file()]
    if missing or not chunks:
        raise VideoError(f"cannot join into {out}: missing chunk(s) {', '.join(missing[:5])}")
    if subtitles is not None and not Path(subtitles).is_file():
        raise VideoError(f"cannot join into {out}: subtitle file {subtitles} not found")
    sub_in, sub_out = subtitle_args(subtitles)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = chunks_folder(chunks)
    listing, part = out.with_name(f".{out.stem}.{os.getpid()}.concat.txt"), part_path(out)
    for stale in (listing, part):  # a stale one, or a link planted there: never written through
        stale.unlink(missing_ok=True)
    listing = concat_list(chunks, listing, base)
    trim = ["-t", f"{audio_seconds:.6f}"] if audio_seconds is not None else []
    try:
        for attempt, video in enumerate(options := _video_args(interpolate_fps, video_seconds)):
            try:
                run_ffmpeg(["-xerror", "-f", "concat", "-safe", "0", "-i", ffmpeg_path(listing),
                            *trim, "-i", ffmpeg_path(audio), *sub_in, "-map", "0:v:0",
                            "-map", "1:a:0", *video, "-c:a", "aac", "-b:a", AUDIO_BITRATE,
                            *sub_out, "-movflags", "+faststart", "-f", "mp4", ffmpeg_path(part)],
                           f"join the chunks into {out}", cwd=base)
                break
            except VideoError:
                if attempt == len(options) - 1:
                    raise
                warnings.warn("NVENC failed; encoding the interpolated video on the CPU")
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)
        listing.unlink(missing_ok=True)
    return out


