"""The storyboard: a contact sheet of the video, one cell per segment or group of segments.

Each cell shows the last frame of its (last finished) segment, its start time (m:ss) and its goal
in words: the lyric line(s), or "audio"; cells that hold a lyric are framed and tagged. A song
with more than MAX_CELLS segments (a 5-minute song has some 600 beats) gets MAX_CELLS cells of
consecutive segments, as equal in count as can be: cell j holds segments
[j * n // MAX_CELLS, (j + 1) * n // MAX_CELLS). The grouping depends on the plan alone, so a
resumed run's sheet equals an uninterrupted one's. 60 cells in 10 columns fill one 1920x1080
screen.
"""

from __future__ import annotations

import dataclasses
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..files import write_bytes
from .fonts import Fonts, draw_lines, fit, wrap
from .subtitles import host_frame

MAX_CELLS = 60
COLUMNS = 10
THUMB = (178, 100)  # thumbnail box, pixels (width, height); pictures keep their shape inside it
CELL_W = 190
PAD = 6  # inside a cell, around the thumbnail and under the text
LINE = 16  # label line pitch, pixels
LABEL_PX = 13  # label text size
LABEL_LINES = 2  # lines of goal text under the time
CELL_H = PAD + THUMB[1] + 4 + LINE * (1 + LABEL_LINES) + PAD
MARGIN = 8  # around the sheet
HEADER = 24  # title line above the cells
BACKGROUND = (18, 18, 18)
CELL = (40, 40, 40)
PLACEHOLDER = (64, 64, 64)
ACCENT = (240, 180, 0)  # lyric cells' frame and tag
TEXT = (235, 235, 235)
MUTED = (150, 150, 150)


@dataclass(frozen=True)
class Cell:
    """One cell of the sheet: a segment, or a group of consecutive segments."""

    start: float  # seconds, the first segment's start
    end: float  # seconds, the last segment's end
    label: str  # the lyric line(s) of its segments joined with ' / ', or 'audio'
    lyric: bool  # whether a lyric line guides any of its segments
    segments: tuple[int, ...]  # the plan's segment indices it holds, in order
    picture: np.ndarray | None = None  # (h, w, 3) uint8 thumbnail; None: not rendered yet
    shown: int | None = None  # the segment whose last frame `picture` is: its latest finished
    finished: int = 0  # how many of its segments are finished


def clock(seconds: float, places: int = 0) -> str:
    """m:ss (h:mm:ss from an hour), rounded down to the second; with `places`, m:ss.ss to that
    many decimals, rounded (for log lines)."""
    if places:
        scale = 10**places
        ticks = round(seconds * scale)
        return f"{ticks // (60 * scale)}:{ticks % (60 * scale) / scale:0{3 + places}.{places}f}"
    whole = int(seconds)
    if whole >= 3600:
        return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
    return f"{whole // 60}:{whole % 60:02d}"


def groups(count: int, max_cells: int = MAX_CELLS) -> list[range]:
    """Consecutive segment indices per cell: one each, or max_cells groups equal in count."""
    cells = min(count, max_cells)
    return [range(j * count // cells, (j + 1) * count // cells) for j in range(cells)]


def _plain(segment) -> dict:
    """A plan entry as the manifest stores it (a schedule.Segment becomes its dict)."""
    return segment if isinstance(segment, dict) else dataclasses.asdict(segment)


def layout(plan: list, max_cells: int = MAX_CELLS) -> list[Cell]:
    """The cells of a plan (manifest segment records or schedule.Segments), without pictures."""
    records = [_plain(s) for s in plan]
    cells = []
    for members in groups(len(records), max_cells):
        texts: list[str] = []
        for k in members:
            for goal in records[k]["goals"]:
                if goal["kind"] == "text" and goal["text"] not in texts:
                    texts.append(goal["text"])
        cells.append(Cell(records[members[0]]["start"], records[members[-1]]["end"],
                          " / ".join(texts) or "audio", bool(texts), tuple(members)))
    return cells


def thumbnail(frame, size: tuple[int, int] = THUMB) -> np.ndarray:
    """A frame (H, W, 3) scaled to fit the thumbnail box, keeping its shape: (h, w, 3) uint8."""
    image = Image.fromarray(host_frame(frame))
    scale = min(size[0] / image.width, size[1] / image.height)
    shape = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return np.asarray(image.resize(shape, Image.Resampling.LANCZOS))


def encode_thumbnail(picture: np.ndarray) -> bytes:
    """A thumbnail as PNG bytes (lossless, so a resumed run's sheet is the same)."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_thumbnail(data: bytes) -> np.ndarray | None:
    """A thumbnail from PNG bytes (h, w, 3) uint8, or None when they are not a picture."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError):
        return None


def save_thumbnail(path: Path, picture: np.ndarray) -> Path:
    """Keeps a thumbnail as a PNG file, atomically."""
    write_bytes(path, encode_thumbnail(picture))
    return Path(path)


def load_thumbnail(path: Path) -> np.ndarray | None:
    """A saved thumbnail, or None when it is missing or unreadable."""
    try:
        return decode_thumbnail(Path(path).read_bytes())
    except OSError:
        return None


def last_frame(chunk: Path) -> np.ndarray | None:
    """The last decoded frame of a chunk (H, W, 3) uint8, or None when it has none (or the chunk
    cannot be decoded: a damaged chunk is rendered again, its cell waits for it)."""
    from ..ffmpeg import VideoError, read_frames

    last = None
    try:
        for last in read_frames(chunk):
            pass
    except VideoError:
        return None
    return last


def sheet_size(count: int) -> tuple[int, int]:
    """Width and height in pixels of a sheet of `count` cells."""
    columns = max(1, min(count, COLUMNS))
    rows = max(1, -(-count // columns))
    return 2 * MARGIN + columns * CELL_W, 2 * MARGIN + HEADER + rows * CELL_H


def cell_origin(n: int, count: int) -> tuple[int, int]:
    """Top-left pixel of cell n on a sheet of `count` cells."""
    columns = max(1, min(count, COLUMNS))
    return MARGIN + (n % columns) * CELL_W, MARGIN + HEADER + (n // columns) * CELL_H


def fitted(picture: np.ndarray) -> np.ndarray:
    """A picture as a cell shows it: itself when it fits the thumbnail box, else scaled to fit."""
    h, w = picture.shape[:2]
    return picture if w <= THUMB[0] and h <= THUMB[1] else thumbnail(picture)


def thumb_origin(picture: np.ndarray, n: int, count: int) -> tuple[int, int]:
    """Top-left pixel of a (fitted) picture in cell n, centred in the thumbnail box."""
    x, y = cell_origin(n, count)
    h, w = picture.shape[:2]
    return x + (CELL_W - w) // 2, y + PAD + (THUMB[1] - h) // 2


def _draw_cell(canvas: Image.Image, draw: ImageDraw.ImageDraw, cell: Cell, n: int, count: int,
               fonts: Fonts) -> None:
    """One cell: its picture (or a placeholder), its time and its goal in words."""
    x, y = cell_origin(n, count)
    draw.rectangle((x, y, x + CELL_W - 1, y + CELL_H - 1), fill=BACKGROUND)
    draw.rectangle((x + 2, y + 2, x + CELL_W - 3, y + CELL_H - 3), fill=CELL,
                   outline=ACCENT if cell.lyric else None, width=2)
    if cell.picture is None:
        bx, by = x + (CELL_W - THUMB[0]) // 2, y + PAD
        draw.rectangle((bx, by, bx + THUMB[0] - 1, by + THUMB[1] - 1), fill=PLACEHOLDER)
        draw_lines(draw, ["not rendered yet"], fonts, x + CELL_W / 2,
                   by + (THUMB[1] - LINE) / 2, MUTED)
    else:
        picture = fitted(cell.picture)
        canvas.paste(Image.fromarray(picture), thumb_origin(picture, n, count))
    top = y + PAD + THUMB[1] + 4
    when = clock(cell.start)
    draw_lines(draw, [when], fonts, x + PAD + fonts.width(when) / 2, top, TEXT)
    if cell.lyric:
        tag_x = x + CELL_W - PAD - fonts.width("lyric") - 8
        draw.rectangle((tag_x, top + 1, x + CELL_W - PAD, top + LINE - 1), fill=ACCENT)
        draw_lines(draw, ["lyric"], fonts, tag_x + 4 + fonts.width("lyric") / 2, top, BACKGROUND)
    width = CELL_W - 2 * PAD
    for k, line in enumerate(wrap(cell.label, fonts, width, LABEL_LINES)):
        line = fit(line, fonts, width)
        draw_lines(draw, [line], fonts, x + PAD + fonts.width(line) / 2, top + (k + 1) * LINE,
                   TEXT if cell.lyric else MUTED)


def _draw_header(draw: ImageDraw.ImageDraw, cells: list[Cell], title: str, width: int,
                 fonts: Fonts) -> None:
    """The title line: the title, how many cells are done, and the song's length."""
    draw.rectangle((0, 0, width - 1, MARGIN + HEADER - 1), fill=BACKGROUND)
    done = sum(cell.finished == len(cell.segments) for cell in cells)
    heading = f"{title}  ·  " if title else ""
    heading += f"{done} of {len(cells)} cells rendered" if done < len(cells) else f"{done} cells"
    heading += f", {clock(cells[-1].end)}" if cells else ""
    heading = fit(heading, fonts, width - 2 * MARGIN)
    draw_lines(draw, [heading], fonts, MARGIN + fonts.width(heading) / 2, MARGIN + 2, TEXT)


def render(cells: list[Cell], title: str = "", fonts: Fonts | None = None) -> Image.Image:
    """The contact sheet: a title line, then the cells in rows of COLUMNS."""
    fonts = fonts or Fonts(LABEL_PX)
    canvas = Image.new("RGB", sheet_size(len(cells)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    _draw_header(draw, cells, title, canvas.width, fonts)
    for n, cell in enumerate(cells):
        _draw_cell(canvas, draw, cell, n, len(cells), fonts)
    return canvas


def storyboard_path(video: Path) -> Path:
    """The sheet beside a video: outputs/output.mp4 -> outputs/output_storyboard.png."""
    video = Path(video)
    return video.with_name(f"{video.stem}_storyboard.png")


def write_sheet(path: Path, image: Image.Image) -> Path:
    """Writes the sheet atomically (never a half-written PNG under its name)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast: it is rewritten during a run
    write_bytes(path, buffer.getvalue())
    return Path(path)


class Storyboard:
    """A run's sheet, kept in memory and rewritten as segments finish.

    Only the cells that changed are drawn again, so a refresh costs about one PNG encode;
    `every` seconds at least between refreshes bounds even that (write() always writes)."""

    def __init__(self, path: Path, plan: list, title: str = "", max_cells: int = MAX_CELLS,
                 every: float = 0.0):
        self.path, self.title, self.every = Path(path), title, every
        self.cells = layout(plan, max_cells)
        self.cell_of = {k: n for n, cell in enumerate(self.cells) for k in cell.segments}
        self.fonts = Fonts(LABEL_PX)
        self.canvas: Image.Image | None = None
        self.finished: set[int] = set()
        self.dirty: set[int] = set()
        self.written = float("-inf")  # time.monotonic() of the last write

    def add(self, index: int, picture: np.ndarray) -> None:
        """Segment `index` finished with this thumbnail (any size: it is fitted to the cell);
        its cell shows its latest finished segment."""
        if index in self.finished:
            return
        self.finished.add(index)
        n = self.cell_of[index]
        cell = self.cells[n]
        latest = cell.shown is None or index > cell.shown
        self.cells[n] = dataclasses.replace(
            cell, picture=fitted(picture) if latest else cell.picture,
            shown=index if latest else cell.shown, finished=cell.finished + 1)
        self.dirty.add(n)

    def update(self, pictures: dict[int, np.ndarray]) -> None:
        """Adds several finished segments' thumbnails (a resumed run's saved ones)."""
        for index in sorted(pictures):
            self.add(index, pictures[index])

    def image(self) -> Image.Image:
        """The sheet as it stands (the same picture render() draws from scratch)."""
        if self.canvas is None:
            self.canvas = render(self.cells, self.title, self.fonts)
        elif self.dirty:
            draw = ImageDraw.Draw(self.canvas)
            _draw_header(draw, self.cells, self.title, self.canvas.width, self.fonts)
            for n in sorted(self.dirty):
                _draw_cell(self.canvas, draw, self.cells[n], n, len(self.cells), self.fonts)
        self.dirty.clear()
        return self.canvas

    def write(self) -> Path:
        """Writes the sheet atomically, now."""
        path = write_sheet(self.path, self.image())
        self.written = time.monotonic()
        return path

    def refresh(self) -> Path | None:
        """Writes the sheet unless the last write was under `every` seconds ago."""
        if time.monotonic() - self.written < self.every:
            return None
        return self.write()


