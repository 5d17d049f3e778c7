"""Tests for music2video.output.subtitles: the cue rule, SRT files and burnt-in captions."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from music2video.output import subtitles
from music2video.output.fonts import Fonts
from music2video.output.subtitles import Burner, Cue, burn, cues, srt_text, text_at, write_srt
from music2video.song.lyrics import LyricLine, load_lyrics

W, H, FPS = 64, 64, 30
TIMING = re.compile(r"(\d+):(\d\d):(\d\d),(\d{3}) --> (\d+):(\d\d):(\d\d),(\d{3})")


def lines(*pairs) -> list[LyricLine]:
    """Lyric lines from (seconds, text) pairs, numbered as in a file."""
    return [LyricLine(t, text, n) for n, (t, text) in enumerate(pairs, 2)]


def srt_cues(text: str) -> list[tuple[float, float, str]]:
    """(start, end, text) of each block of an SRT document, read independently of the module."""
    found = []
    for block in text.strip().split("\n\n"):
        number, timing, *words = block.split("\n")
        h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, TIMING.fullmatch(timing).groups())
        found.append((h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000,
                      "\n".join(words)))
    return found


def grey(level: int = 90) -> np.ndarray:
    """A flat frame, (H, W, 3) uint8."""
    return np.full((H, W, 3), level, np.uint8)


def changed_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Indices of the rows where two frames differ."""
    return np.flatnonzero((a != b).any(axis=(1, 2)))


# --- the cue rule -------------------------------------------------------------------------------


def test_each_line_lasts_until_the_next_at_most_max_seconds():
    lyric = lines((0.5, "first"), (2.0, "second"), (10.0, "third"), (19.5, "last"))
    assert cues(lyric, 20.0) == [Cue(0.5, 2.0, "first"), Cue(2.0, 7.0, "second"),
                                 Cue(10.0, 15.0, "third"), Cue(19.5, 20.0, "last")]
    assert cues(lyric, 20.0, max_seconds=1.0)[:2] == [Cue(0.5, 1.5, "first"),
                                                      Cue(2.0, 3.0, "second")]


def test_lines_with_one_timestamp_share_a_cue_in_file_order():
    lyric = lines((1.0, "one"), (3.0, "two a"), (3.0, "two b"), (4.0, "three"))
    assert cues(lyric, 6.0) == [Cue(1.0, 3.0, "one"), Cue(3.0, 4.0, "two a\ntwo b"),
                                Cue(4.0, 6.0, "three")]


def test_cues_never_pass_the_end_of_the_song():
    lyric = lines((1.0, "inside"), (8.0, "at the end"), (9.0, "after"))
    assert cues(lyric, 8.0) == [Cue(1.0, 6.0, "inside")]
    assert cues(lyric, 8.0004) == [Cue(1.0, 6.0, "inside")]  # under a millisecond: never shown
    assert cues([], 8.0) == []


def test_text_is_cleaned_for_srt():
    lyric = lines((1.0, "  spaced   out \n\n second  line "))
    assert cues(lyric, 3.0) == [Cue(1.0, 3.0, "spaced out\nsecond line")]


def test_control_characters_never_reach_the_srt():
    # A form feed would split the text into lines that read as a fake cue; BEL/ESC are raw bytes.
    lyric = lines((1.0, "real\f\f2\f00:00:05,000 --> 00:00:09,000\ffake \x07\x1b[1m🎸 ça"))
    items = cues(lyric, 3.0)
    assert items == [Cue(1.0, 3.0, "real 2 00:00:05,000 --> 00:00:09,000 fake [1m🎸 ça")]
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", srt_text(items))
    assert len(srt_cues(srt_text(items))) == 1


# --- SRT ----------------------------------------------------------------------------------------


def test_srt_text_format():
    text = srt_text([Cue(0.5, 2.0, "first"), Cue(3723.0125, 3725.9999, "two\nlines")])
    assert text == ("1\n00:00:00,500 --> 00:00:02,000\nfirst\n\n"
                    "2\n01:02:03,012 --> 01:02:06,000\ntwo\nlines\n\n")


def test_srt_reads_back_with_the_projects_reader(tmp_path):
    lyric = lines((0.25, "déjà vu, ça va"), (1.5, "君の名は"), (1.5, "twice"), (4.0, "a: b"),
                  (61.123, "late"))
    items = cues(lyric, 70.0)
    path = write_srt(tmp_path / "song.srt", items)
    assert path == tmp_path / "song.srt"
    assert [p.name for p in tmp_path.iterdir()] == ["song.srt"]  # no temporary file left
    read = srt_cues(path.read_text(encoding="utf-8"))
    assert [text for _, _, text in read] == [c.text for c in items]
    assert [t for a, b, _ in read for t in (a, b)] == pytest.approx(
        [t for c in items for t in (c.start, c.end)], abs=0.0005)
    back = load_lyrics(path)
    assert [(l.time, l.text) for l in back] == [
        (0.25, "déjà vu, ça va"), (1.5, "君の名は twice"), (4.0, "a: b"), (61.123, "late")]


def test_srt_path_is_beside_the_video():
    assert subtitles.srt_path(Path("outputs/output.mp4")) == Path("outputs/output.srt")


# --- which text each frame shows -------------------------------------------------------------


def test_text_at_uses_the_frame_rounding_rule():
    items = [Cue(0.5, 1.0, "a"), Cue(1.0, 1.51, "b"), Cue(3.0, 4.0, "c")]
    shown = [text_at(items, k, 10) for k in range(45)]
    assert shown == [""] * 5 + ["a"] * 5 + ["b"] * 5 + [""] * 15 + ["c"] * 10 + [""] * 5


@pytest.mark.parametrize("first,count", [(0, 45), (3, 4), (7, 1), (12, 20), (40, 10), (9, 0)])
def test_text_runs_split_a_held_picture_where_the_text_changes(first, count):
    items = [Cue(0.5, 1.0, "a"), Cue(1.0, 1.51, "b"), Cue(3.0, 4.0, "c")]
    runs = subtitles.text_runs(items, first, count, 10)
    assert sum(n for _, n in runs) == count and all(n > 0 for _, n in runs)
    assert all(a[0] != b[0] for a, b in zip(runs, runs[1:]))  # maximal runs
    expanded = [text for text, n in runs for _ in range(n)]
    assert expanded == [text_at(items, k, 10) for k in range(first, first + count)]


# --- burnt-in captions -----------------------------------------------------------------------


def test_burn_draws_only_in_the_bottom_band():
    frame = grey()
    fonts = subtitles.caption_fonts(H)
    out = burn(frame, "hello there", fonts)
    assert out.shape == frame.shape and out.dtype == np.uint8
    rows = changed_rows(frame, out)
    assert len(rows) >= fonts.size // 2  # readable: at least half the text size high
    assert rows.min() >= H // 2 and rows.max() < H  # in the lower half
    assert (out[rows] == 255).all(axis=-1).any() and (out[rows] == 0).all(axis=-1).any()
    assert np.array_equal(burn(frame, "", fonts), frame)
    assert np.array_equal(frame, grey())  # the input is left alone


def test_burn_is_centred():
    out = burn(grey(), "iii", subtitles.caption_fonts(H))
    cols = np.flatnonzero((out != grey()).any(axis=(0, 2)))
    assert abs((cols.min() + cols.max()) / 2 - (W - 1) / 2) <= 2


def test_burn_draws_accents_and_cjk_differently():
    pytest.importorskip("fontpkg_noto_sans")
    pytest.importorskip("noto_cjk_sans_jp_regular")
    fonts = Fonts(24)
    frame = np.full((96, 160, 3), 90, np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every character has a font
        plain, accent = burn(frame, "e", fonts), burn(frame, "é", fonts)
        one, other = burn(frame, "三", fonts), burn(frame, "日", fonts)
    assert not np.array_equal(plain, accent)
    assert changed_rows(frame, accent).min() < changed_rows(frame, plain).min()  # the accent
    assert not np.array_equal(one, other)


def test_burn_accepts_a_tensor():
    torch = pytest.importorskip("torch")
    frame = torch.full((H, W, 3), 90, dtype=torch.uint8)
    fonts = subtitles.caption_fonts(H)
    assert np.array_equal(burn(frame, "la", fonts), burn(grey(), "la", fonts))


def test_burner_pieces_caption_only_the_frames_inside_a_cue():
    items = [Cue(0.5, 1.0, "la la"), Cue(1.0, 2.0, "second line")]
    burner = Burner(items, 10, W, H)
    frame = grey()
    pieces = burner.pieces(frame, 3, 12)  # frames 3..14: 3-4 plain, 5-9 'la la', 10-14 second
    assert [n for _, n in pieces] == [2, 5, 5]
    assert pieces[0][0] is frame  # untouched, not copied
    fonts = subtitles.caption_fonts(H)
    assert np.array_equal(pieces[1][0], burn(frame, "la la", fonts))
    assert np.array_equal(pieces[2][0], burn(frame, "second line", fonts))
    again = burner.pieces(frame, 5, 1)
    assert np.array_equal(again[0][0], pieces[1][0]) and len(burner.bands) == 2


def test_burnt_captions_survive_encoding_in_their_frames_only(tmp_path):
    """Frames written as the renderer would (a picture held for several frames), read back."""
    from music2video.ffmpeg import read_frames
    from music2video.output.video import FrameWriter

    items = [Cue(4 / FPS, 9 / FPS, "la la la")]  # frames 4..8
    burner = Burner(items, FPS, W, H)
    with FrameWriter(tmp_path / "chunk.mp4", W, H, FPS) as writer:
        first = 0
        for held in (3, 4, 5):  # three pictures, held 3, 4 and 5 frames: frames 0..11
            for frame, n in burner.pieces(grey(), first, held):
                writer.write(frame, n)
            first += held
    frames = [f.astype(int) for f in read_frames(tmp_path / "chunk.mp4")]
    assert len(frames) == 12
    band = [np.abs(f[H // 2:] - 90).max() for f in frames]
    top = [np.abs(f[:H // 2] - 90).max() for f in frames]
    assert [k for k, b in enumerate(band) if b > 60] == [4, 5, 6, 7, 8]
    assert max(top) <= 4  # above the band: only the encoder's rounding
