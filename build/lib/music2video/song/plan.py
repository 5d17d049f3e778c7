"""The plan of one song: its decoded audio, lyric lines, segments and sections."""

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..options import Options

DRAFT_STEPS = 5  # --draft renders a fifth of each segment's steps (at least one)


@dataclass(frozen=True)
class Song:
    """The decoded song."""

    path: Path
    samples: np.ndarray  # (n,) mono float32 at sr
    sr: int
    duration: float  # seconds


@dataclass(frozen=True)
class Plan:
    """What a song's run renders: segments, and sections of them (first, last) that can render
    in parallel."""

    song: Song
    lyrics: list  # LyricLine, inside the song
    segments: list  # segments.Segment
    sections: list[tuple[int, int]]
    lyrics_given: int = 0  # lines in the lyrics file, before those past the song's end were dropped

    @property
    def steps(self) -> int:
        """Optimisation steps of the whole song."""
        return sum(s.iterations for s in self.segments)


def read_song(path: Path, sr: int) -> Song:
    """Decodes a song for the embeddings and beat tracking."""
    from .audio import load_audio

    if sr != 16000:
        warnings.warn(f"Wav2CLIP was trained on 16 kHz audio; -sf {sr} gives it audio it has "
                      "never heard")
    samples = load_audio(path, sr)
    return Song(Path(path), samples, sr, len(samples) / sr)


def read_lyrics(path: Path | None, duration: float, fps: float) -> tuple[list, int]:
    """The lyric lines inside the song, bounded to what `fps` frames can show ([] without a
    lyrics file), and how many the file has."""
    from .lyrics import drop_after, load_lyrics, within_frames

    if path is None:
        return [], 0
    lines = load_lyrics(path)
    return within_frames(drop_after(lines, duration, path), fps, path), len(lines)


def steps_per_second(opts: "Options", duration: float) -> float:
    """-ips, or -i spread over the song; 0 means loudness-driven."""
    if opts.iterations:
        return opts.iterations / duration
    return opts.iterations_per_second


def build_schedule(opts: "Options", song: Song, lyrics: list) -> list:
    """The segments of the song: the only thing the two modes do differently."""
    from . import audio
    from .segments import beat_bounds, beat_schedule, fixed_bounds, interpolate_schedule

    loud = audio.loudness(song.samples, song.sr)
    ips = steps_per_second(opts, song.duration)
    if opts.mode == "interpolate":
        segments = interpolate_schedule(lyrics, song.duration, opts.fps, ips, loud,
                                        opts.blend, opts.video_length)
    else:
        beats = audio.beat_times(song.samples, song.sr)
        if len(beats):
            bounds = beat_bounds(beats, song.duration)
        else:
            warnings.warn(f"no beat found in {song.path}; cutting it into {opts.video_length:g}-"
                          "second chunks (-vl)")
            bounds = fixed_bounds(song.duration, opts.video_length)
        segments = beat_schedule(bounds, lyrics, opts.fps, ips, loud, opts.lyric_beats)
    if opts.draft:
        segments = [replace(s, iterations=max(1, round(s.iterations / DRAFT_STEPS)))
                    for s in segments]
    if opts.iterations and opts.iterations < len(segments):
        warnings.warn(f"-i {opts.iterations} is fewer steps than the song has segments "
                      f"({len(segments)}); each segment gets at least one step, "
                      f"{sum(s.iterations for s in segments)} in all")
    return segments


def plan_song(opts: "Options", song: Song, lyrics_path: Path | None) -> Plan:
    """Plans a decoded song's segments and sections."""
    from .sections import sections_for

    lyrics, given = read_lyrics(lyrics_path, song.duration, opts.fps)
    segments = build_schedule(opts, song, lyrics)
    sections = [(s.first, s.last) for s in sections_for(song.samples, song.sr, segments,
                                                        opts.sections)]
    return Plan(song, lyrics, segments, sections, given)
