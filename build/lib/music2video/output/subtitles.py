"""Lyric subtitles: cues from the lyric lines, an SRT file beside the video, and burnt-in text.

Display rule: a line is shown from its timestamp until the next line's timestamp, for at most
MAX_SECONDS (5 s, so a line does not linger through an instrumental), and never past the end of
the song. Lines that share a timestamp form one cue, one line each. A frame shows a cue when its
index k satisfies round(start * fps) <= k < round(end * fps), the rule segments use for frames.

Burnt-in text is drawn with fonts.Fonts (packaged Noto fonts, per-character fallback).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..files import write_bytes
from ..song.lyrics import plain_text
from .fonts import Fonts, draw_lines, wrap

MAX_SECONDS = 5.0  # longest time a line stays on screen
CAPTION_SIZE = 0.06  # burnt-in text height (em), as a fraction of the frame height
MIN_CAPTION_PX = 10  # smallest burnt-in text size, pixels
STROKE = 0.1  # outline width, as a fraction of the text size
MARGIN = 0.05  # gap under the last line, as a fraction of the frame height
WIDTH = 0.9  # widest line, as a fraction of the frame width
MAX_LINES = 3  # burnt-in lines at most; the last is cut with an ellipsis


@dataclass(frozen=True)
class Cue:
    """Text on screen from start to end (seconds)."""

    start: float
    end: float
    text: str  # one or more lines joined with '\n'


def _clean(text: str) -> str:
    """Lyric text as subtitle lines: no control characters, no blank lines (they end an SRT
    cue), spaces collapsed."""
    lines = plain_text(text)[0].splitlines()
    return "\n".join(" ".join(part.split()) for part in lines if part.strip())


def cues(lyrics, duration: float, max_seconds: float = MAX_SECONDS) -> list[Cue]:
    """Cues for lyric lines (objects with .time and .text): the module docstring's rule."""
    times = sorted({l.time for l in lyrics if 0 <= l.time < duration})
    result = []
    for t, following in zip(times, times[1:] + [duration]):
        text = "\n".join(_clean(l.text) for l in lyrics if l.time == t and _clean(l.text))
        end = min(following, t + max_seconds, duration)
        if text and round(end * 1000) > round(t * 1000):  # shorter than 1 ms: never shown
            result.append(Cue(t, end, text))
    return result


def clip(items: list[Cue], seconds: float) -> list[Cue]:
    """The cues within the first `seconds` (for a partial video): later ones dropped, ends cut."""
    return [Cue(c.start, min(c.end, seconds), c.text) for c in items
            if round(min(c.end, seconds) * 1000) > round(c.start * 1000)]


def srt_path(video: Path) -> Path:
    """The SRT file beside a video: outputs/output.mp4 -> outputs/output.srt."""
    return Path(video).with_suffix(".srt")


def srt_time(seconds: float) -> str:
    """HH:MM:SS,mmm as SRT writes it."""
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def srt_text(items: list[Cue]) -> str:
    """The cues as an SRT document (numbered blocks, each ending in a blank line)."""
    return "".join(f"{n}\n{srt_time(c.start)} --> {srt_time(c.end)}\n{c.text}\n\n"
                   for n, c in enumerate(items, 1))


def write_srt(path: Path, items: list[Cue]) -> Path:
    """Writes the cues as UTF-8 SRT, atomically."""
    write_bytes(path, srt_text(items).encode("utf-8"))
    return Path(path)


def frame_range(cue: Cue, fps: float) -> tuple[int, int]:
    """The frames [first, end) that show a cue."""
    return round(cue.start * fps), round(cue.end * fps)


def text_at(items: list[Cue], frame_index: int, fps: float) -> str:
    """The text shown on a frame ('' for none); cues are sorted and do not overlap."""
    k = bisect.bisect_right([frame_range(c, fps)[0] for c in items], frame_index) - 1
    if k >= 0 and frame_index < frame_range(items[k], fps)[1]:
        return items[k].text
    return ""


def text_runs(items: list[Cue], first: int, count: int, fps: float) -> list[tuple[str, int]]:
    """Frames first .. first+count-1 as (text, frames) runs of constant text, in order."""
    cuts = {first, first + count}
    for c in items:
        cuts.update(k for k in frame_range(c, fps) if first < k < first + count)
    edges = sorted(cuts)
    return [(text_at(items, a, fps), b - a) for a, b in zip(edges, edges[1:]) if b > a]


# Burnt-in captions


def caption_fonts(height: int) -> Fonts:
    """The font chain at the caption size for frames `height` pixels high."""
    return Fonts(max(MIN_CAPTION_PX, round(height * CAPTION_SIZE)), weight="SemiBold")


def overlay(text: str, width: int, height: int, fonts: Fonts) -> tuple[int, int, np.ndarray]:
    """The caption as an RGBA patch (h, w, 4) uint8, cut to its ink, and its top-left (row, col)."""
    stroke = max(1, round(fonts.size * STROKE))
    lines = wrap(text, fonts, WIDTH * width - 2 * stroke, MAX_LINES)
    band_h = len(lines) * fonts.line_height + 2 * stroke
    top = max(0, height - round(MARGIN * height) - band_h)
    layer = Image.new("RGBA", (width, min(band_h, height - top)), (0, 0, 0, 0))
    draw_lines(ImageDraw.Draw(layer), lines, fonts, width / 2, stroke, (255, 255, 255, 255),
               stroke, (0, 0, 0, 255))
    box = layer.getbbox() or (0, 0, 0, 0)  # the inked part (alpha > 0)
    return top + box[1], box[0], np.asarray(layer.crop(box))


def composite(frame: np.ndarray, top: int, left: int, patch: np.ndarray) -> np.ndarray:
    """A copy of the frame with the RGBA patch laid over it at (top, left)."""
    out = np.array(frame, dtype=np.uint8, copy=True)  # (H, W, 3)
    h, w = patch.shape[:2]
    region = out[top:top + h, left:left + w]
    alpha = patch[:, :, 3:4].astype(np.float32) / 255  # (h, w, 1)
    region[:] = np.round(region * (1 - alpha) + patch[:, :, :3] * alpha).astype(np.uint8)
    return out


def host_frame(frame) -> np.ndarray:
    """A frame (H, W, 3) uint8 as a host array (a tensor is copied off its device)."""
    if hasattr(frame, "cpu"):
        frame = frame.cpu().numpy()
    return np.asarray(frame, dtype=np.uint8)


def burn(frame, text: str, fonts: Fonts) -> np.ndarray:
    """The frame with text drawn bottom-centre, white with a black outline ('' leaves it as is)."""
    frame = host_frame(frame)
    if not text:
        return frame
    return composite(frame, *overlay(text, frame.shape[1], frame.shape[0], fonts))


class Burner:
    """Burns the cues into a run's frames, drawing each distinct caption once."""

    def __init__(self, items: list[Cue], fps: float, width: int, height: int,
                 fonts: Fonts | None = None, keep: int = 4):
        self.items, self.fps, self.size = items, fps, (width, height)
        self.fonts = fonts or caption_fonts(height)
        self.keep = keep
        self.bands: dict[str, tuple[int, int, np.ndarray]] = {}

    def band(self, text: str) -> tuple[int, int, np.ndarray]:
        """The caption's patch and place, from the few most recent ones or drawn now."""
        if text not in self.bands:
            if len(self.bands) >= self.keep:
                del self.bands[next(iter(self.bands))]
            self.bands[text] = overlay(text, *self.size, self.fonts)
        return self.bands[text]

    def pieces(self, frame, first: int, count: int) -> list[tuple[object, int]]:
        """(frame, repeat) pairs that show `frame` as frames first .. first+count-1 with their
        captions; a frame without a caption is passed through untouched (it may stay a tensor)."""
        return [(composite(host_frame(frame), *self.band(text)) if text else frame, n)
                for text, n in text_runs(self.items, first, count, self.fps)]
