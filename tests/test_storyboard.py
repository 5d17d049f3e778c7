"""Tests for music2video.output.storyboard: cells from the plan, grouping, the sheet, and resuming."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from music2video.driver.combine import rebuild
from music2video.driver.folder import saved_pictures, segment_record, thumb_name
from music2video.output import storyboard
from music2video.output.fonts import Fonts, wrap
from music2video.output.storyboard import (
    ACCENT,
    CELL,
    CELL_H,
    CELL_W,
    COLUMNS,
    HEADER,
    MARGIN,
    PLACEHOLDER,
    THUMB,
    Storyboard,
    layout,
    render,
)
from music2video.output.video import FrameWriter
from music2video.song import segments as schedule
from music2video.song.lyrics import LyricLine

FPS = 30


class Flat:
    """Loudness stand-in: the same peak everywhere."""

    def peak(self, start: float, end: float) -> float:
        return 0.5


def plan(beats: int, lyrics: list[LyricLine], seconds: float = 10.0) -> list[dict]:
    """A beat schedule's segments as the manifest records them."""
    bounds = [0.0] + [seconds * (k + 0.5) / beats for k in range(beats)] + [seconds]
    segments = schedule.beat_schedule(bounds, lyrics, FPS, 4, Flat())
    return [segment_record(s, len(segments)) for s in segments]


def picture(k: int, size=(64, 48)) -> np.ndarray:
    """A distinct test frame for segment k, (H, W, 3) uint8."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 4 + k * 37) % 256, (y * 5 + k * 11) % 256,
                     np.full_like(x, k * 53 % 256)], axis=-1).astype(np.uint8)


LYRICS = [LyricLine(1.0, "a city skyline at dawn", 2), LyricLine(1.1, "déjà vu 君の名は", 3),
          LyricLine(6.0, "the sign says: open all night", 4)]


# --- cells from the plan ----------------------------------------------------------------------


def test_one_cell_per_segment_with_its_goal_in_words():
    records = plan(6, LYRICS)
    cells = layout(records)
    assert [c.segments for c in cells] == [(k,) for k in range(len(records))]
    assert [(c.start, c.end) for c in cells] == [(r["start"], r["end"]) for r in records]
    lyric = {n: c.label for n, c in enumerate(cells) if c.lyric}
    assert lyric == {1: "a city skyline at dawn / déjà vu 君の名は",
                     4: "the sign says: open all night"}
    assert all(c.label == "audio" for c in cells if not c.lyric)
    assert all(c.picture is None for c in cells)


def test_many_segments_are_grouped_deterministically():
    records = plan(599, LYRICS, seconds=300.0)
    cells = layout(records)
    assert len(cells) == storyboard.MAX_CELLS
    members = [k for c in cells for k in c.segments]
    assert members == list(range(len(records)))  # consecutive, each segment once
    assert {len(c.segments) for c in cells} == {10}
    assert cells[0].label == "a city skyline at dawn / déjà vu 君の名は" and cells[0].lyric
    assert sum(c.lyric for c in cells) == 2
    assert [c.start for c in cells] == [records[c.segments[0]]["start"] for c in cells]
    assert layout(records) == cells  # from the plan alone


@pytest.mark.parametrize("count,cells", [(0, 0), (1, 1), (60, 60), (61, 60), (1000, 60)])
def test_groups_cover_every_segment_evenly(count, cells):
    found = storyboard.groups(count)
    assert len(found) == cells
    assert [k for g in found for k in g] == list(range(count))
    assert max(map(len, found), default=1) - min(map(len, found), default=1) <= 1


def test_layout_takes_schedule_segments_too():
    bounds = [0.0, 1.0, 2.0, 3.0]
    segments = schedule.beat_schedule(bounds, LYRICS[:1], FPS, 4, Flat())
    assert layout(segments) == layout([segment_record(s, 3) for s in segments])


@pytest.mark.parametrize("seconds,text", [(0, "0:00"), (59.99, "0:59"), (61.5, "1:01"),
                                          (600, "10:00"), (3725, "1:02:05")])
def test_clock(seconds, text):
    assert storyboard.clock(seconds) == text


# --- pictures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size,shape", [((64, 48), (100, 133, 3)), ((512, 512), (100, 100, 3)),
                                        ((1920, 1080), (100, 178, 3))])
def test_thumbnail_fits_the_box_keeping_the_shape(size, shape):
    assert storyboard.thumbnail(picture(3, size)).shape == shape


def test_thumbnail_of_a_tensor():
    torch = pytest.importorskip("torch")
    frame = picture(2)
    assert np.array_equal(storyboard.thumbnail(torch.from_numpy(frame)),
                          storyboard.thumbnail(frame))


def test_thumbnails_round_trip_exactly(tmp_path):
    thumb = storyboard.thumbnail(picture(5))
    assert np.array_equal(storyboard.decode_thumbnail(storyboard.encode_thumbnail(thumb)), thumb)
    path = storyboard.save_thumbnail(tmp_path / "thumb_00005.png", thumb)
    assert np.array_equal(storyboard.load_thumbnail(path), thumb)
    assert os.listdir(tmp_path) == ["thumb_00005.png"]
    assert storyboard.decode_thumbnail(b"not a picture") is None
    assert storyboard.load_thumbnail(tmp_path / "missing.png") is None
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    assert storyboard.load_thumbnail(tmp_path / "broken.png") is None


def test_last_frame_of_a_chunk(tmp_path):
    chunk = tmp_path / "chunk.mp4"
    with FrameWriter(chunk, 64, 48, FPS) as writer:
        for level in (30, 90, 200):
            writer.write(np.full((48, 64, 3), level, np.uint8))
    frame = storyboard.last_frame(chunk)
    assert frame.shape == (48, 64, 3) and abs(frame.mean() - 200) < 3


# --- the sheet --------------------------------------------------------------------------------


def cell_box(n: int, count: int) -> tuple[int, int]:
    """Top-left of cell n, computed here from the layout constants."""
    columns = min(count, COLUMNS)
    return MARGIN + n % columns * CELL_W, MARGIN + HEADER + n // columns * CELL_H


def label_area(image: np.ndarray, n: int, count: int) -> np.ndarray:
    """The text part of cell n (under the thumbnail)."""
    x, y = cell_box(n, count)
    return image[y + THUMB[1] + 8:y + CELL_H - 4, x + 4:x + CELL_W - 4]


def test_sheet_has_the_expected_size():
    records = plan(6, LYRICS)
    assert render(layout(records)).size == (2 * MARGIN + 7 * CELL_W,
                                            2 * MARGIN + HEADER + CELL_H)
    big = render(layout(plan(599, LYRICS, 300.0)))
    assert big.size == (2 * MARGIN + 10 * CELL_W, 2 * MARGIN + HEADER + 6 * CELL_H)
    assert big.width <= 1920 and big.height <= 1080  # a 5-minute song on one screen


def test_each_cell_shows_its_picture_time_and_label():
    records = plan(6, LYRICS)
    board = Storyboard(Path("unused.png"), records)
    thumbs = {k: storyboard.thumbnail(picture(k)) for k in range(4)}
    board.update(thumbs)
    image = np.asarray(board.image())
    count = len(records)
    for n, cell in enumerate(board.cells):
        x, y = cell_box(n, count)
        if n < 4:
            px, py = storyboard.thumb_origin(thumbs[n], n, count)
            h, w = thumbs[n].shape[:2]
            assert np.array_equal(image[py:py + h, px:px + w], thumbs[n])
        else:  # not rendered yet: a placeholder box
            assert tuple(image[y + storyboard.PAD, x + CELL_W // 2 - THUMB[0] // 2]) == PLACEHOLDER
        assert tuple(image[y + 2, x + CELL_W // 2]) == (ACCENT if cell.lyric else CELL)
        area = label_area(image, n, count)
        assert (area != CELL).any(axis=-1).sum() > 40  # the time and label are drawn
    audio = [label_area(image, n, count) for n, c in enumerate(board.cells) if not c.lyric]
    lyric = [label_area(image, n, count) for n, c in enumerate(board.cells) if c.lyric]
    assert not np.array_equal(lyric[0], lyric[1])
    assert not any(np.array_equal(lyric[0], a) for a in audio)


def test_a_long_lyric_is_cut_with_an_ellipsis_inside_its_cell():
    long_line = "word " * 80
    records = plan(2, [LyricLine(0.1, long_line, 2)])
    fonts = Fonts(storyboard.LABEL_PX)
    lines = wrap(long_line.strip(), fonts, CELL_W - 2 * storyboard.PAD, storyboard.LABEL_LINES)
    assert len(lines) == 2 and lines[-1].endswith(fonts.ellipsis())
    image = np.asarray(render(layout(records)))
    right = image[:, cell_box(1, 3)[0]:cell_box(1, 3)[0] + 2]
    assert (right == storyboard.BACKGROUND).all()  # no text spills into the next cell


def test_a_larger_thumbnail_is_fitted_into_its_cell():
    board = Storyboard(Path("unused.png"), plan(2, []))
    wide = picture(4, size=(192, 108))  # as render.thumbnail makes them, THUMB_WIDTH across
    board.add(0, wide)
    assert board.cells[0].picture.shape == (100, 178, 3)
    image = np.asarray(board.image())
    x, y = cell_box(1, 3)
    assert (image[y:y + CELL_H, x:x + 2] == storyboard.BACKGROUND).all()  # nothing spills over
    assert np.array_equal(image[y:y + CELL_H, x:x + CELL_W],
                          np.asarray(render(board.cells))[y:y + CELL_H, x:x + CELL_W])


def test_incremental_sheet_equals_a_fresh_render(tmp_path):
    board = Storyboard(tmp_path / "s.png", plan(80, LYRICS, 40.0), title="song.mp3")
    for k in range(0, 80, 3):
        board.add(k, storyboard.thumbnail(picture(k)))
        if k % 9 == 0:
            board.write()
    board.write()
    fresh = render(board.cells, "song.mp3")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "s.png")), np.asarray(fresh))


def test_write_is_atomic_and_refresh_waits(tmp_path):
    path = tmp_path / "out" / "output_storyboard.png"
    board = Storyboard(path, plan(3, []), every=3600)
    assert board.refresh() == path
    first = path.read_bytes()
    board.add(0, storyboard.thumbnail(picture(0)))
    assert board.refresh() is None and path.read_bytes() == first  # too soon
    assert board.write() == path and path.read_bytes() != first
    assert os.listdir(path.parent) == [path.name]  # no temporary file left
    Image.open(path).verify()


def test_storyboard_path_is_beside_the_video():
    assert storyboard.storyboard_path(Path("outputs/output.mp4")) == Path(
        "outputs/output_storyboard.png")


# --- resuming -------------------------------------------------------------------------------


def render_run(run_dir: Path, records: list[dict], order: list[int], done: set[int]) -> bytes:
    """Segments finished in `order` as the driver would: thumbnail bytes saved, cell updated,
    sheet written; `done` are those a previous run finished (their thumbnails are on disk)."""
    out = run_dir / "sheet.png"
    board = Storyboard(out, records, title="song")
    board.update(saved_pictures(run_dir, {"segments": records}, done))
    if done:
        board.write()
    for n, k in enumerate(order):
        data = storyboard.encode_thumbnail(storyboard.thumbnail(picture(k)))
        (run_dir / thumb_name(k, len(records))).write_bytes(data)
        board.add(k, storyboard.decode_thumbnail(data))
        if n % 16 == 0 or n == len(order) - 1:  # as refresh() would, now and then
            board.write()
    return out.read_bytes()


@pytest.mark.parametrize("count", [7, 75])
def test_a_resumed_run_has_the_same_storyboard(tmp_path, count):
    records = plan(count - 1, LYRICS, 30.0)
    (tmp_path / "a").mkdir()
    whole = render_run(tmp_path / "a", records, list(range(count)), set())
    (tmp_path / "b").mkdir()
    first = list(range(count // 2))
    render_run(tmp_path / "b", records, first, set())  # interrupted
    resumed = render_run(tmp_path / "b", records, list(range(count // 2, count)), set(first))
    assert resumed == whole
    rebuilt = rebuild(tmp_path / "b", {"segments": records}, set(range(count)),
                                 tmp_path / "rebuilt.png", title="song")
    assert rebuilt.read_bytes() == whole


def test_segments_finishing_out_of_order_give_the_same_storyboard(tmp_path):
    records = plan(74, LYRICS, 30.0)
    (tmp_path / "a").mkdir()
    whole = render_run(tmp_path / "a", records, list(range(75)), set())
    (tmp_path / "b").mkdir()
    sections = [k for start in (0, 25, 50) for k in range(start, start + 9)]  # three at a time
    render_run(tmp_path / "b", records, sections, set())
    rest = [k for k in reversed(range(75)) if k not in sections]
    assert render_run(tmp_path / "b", records, rest, set(sections)) == whole


def test_header_counts_finished_cells(tmp_path):
    board = Storyboard(tmp_path / "s.png", plan(119, [], 60.0))  # 120 segments, 2 per cell
    board.add(1, storyboard.thumbnail(picture(1)))
    assert board.cells[0].finished == 1 and board.cells[0].shown == 1
    board.add(1, storyboard.thumbnail(picture(9)))  # reported twice: counted once, kept
    board.add(0, storyboard.thumbnail(picture(0)))
    assert board.cells[0].finished == 2 and board.cells[0].shown == 1
    assert np.array_equal(board.cells[0].picture, storyboard.thumbnail(picture(1)))
    before = np.asarray(render(board.cells))[:MARGIN + HEADER]
    board.add(3, storyboard.thumbnail(picture(3)))  # cell 1 half done: still one cell finished
    assert np.array_equal(np.asarray(render(board.cells))[:MARGIN + HEADER], before)
    board.add(2, storyboard.thumbnail(picture(2)))
    assert not np.array_equal(np.asarray(render(board.cells))[:MARGIN + HEADER], before)


def test_rebuild_falls_back_to_the_chunks(tmp_path):
    records = plan(2, LYRICS, 3.0)
    levels = [40, 120, 220]
    for record, level in zip(records, levels):
        with FrameWriter(tmp_path / record["chunk"], 64, 48, FPS) as writer:
            writer.write(np.full((48, 64, 3), 10, np.uint8))
            writer.write(np.full((48, 64, 3), level, np.uint8))
    storyboard.save_thumbnail(tmp_path / thumb_name(2, 3), np.zeros((10, 10, 3), np.uint8))
    manifest = {"segments": records}
    pictures = saved_pictures(tmp_path, manifest, {0, 1, 2})
    assert sorted(pictures) == [0, 1, 2]
    assert abs(pictures[0].mean() - 40) < 3 and abs(pictures[1].mean() - 120) < 3
    assert pictures[2].shape == (10, 10, 3)  # a saved thumbnail wins over the chunk
    assert saved_pictures(tmp_path, manifest, {1}).keys() == {1}
    (tmp_path / records[0]["chunk"]).unlink()
    assert saved_pictures(tmp_path, manifest, {0, 1, 2}).keys() == {1, 2}
    out = rebuild(tmp_path, manifest, {0, 1, 2}, tmp_path / "s.png")
    assert Image.open(out).size == storyboard.sheet_size(3)
