"""Tests for music2video.song.lyrics: CSV, LRC and SRT reading, errors, and drop_after."""

import warnings
from pathlib import Path

import pytest

from music2video.song.lyrics import LyricLine, LyricsError, drop_after, load_lyrics, parse_timestamp

SEED_LYRICS = Path(__file__).resolve().parents[1] / "lyrics" / "imagenet_song_lyrics.csv"  # the seed's file, as is


def write(tmp_path, name, content):
    """Writes str content as UTF-8 (bytes as they are) and returns the path."""
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8"))
    return path


def times_and_texts(lines):
    """(time, text) pairs, for compact asserts."""
    return [(lyric.time, lyric.text) for lyric in lines]


def load_error(path):
    """The message of the LyricsError that load_lyrics raises for path."""
    with pytest.raises(LyricsError) as info:
        load_lyrics(path)
    return str(info.value)


# parse_timestamp


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("0:05", 5.0),
        ("1:03", 63.0),
        ("01:03", 63.0),
        ("00:05", 5.0),
        ("01:03.25", 63.25),
        ("12:34.5", 754.5),
        ("1:02:03", 3723.0),
        ("1:02:03.125", 3723.125),
        ("00:00:05", 5.0),
        ("90:00", 5400.0),
        ("12.5", 12.5),
        ("7", 7.0),
        ("  01:03 ", 63.0),
    ],
)
def test_parse_timestamp_forms(text, seconds):
    assert parse_timestamp(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["1:2x", "", "abc", "1:5", "1:60", "00:75", "1:60:00", "1:2:03", "1::03", "1:02:03:04", "nan", "1e3"]
)
def test_parse_timestamp_rejects_bad_forms(text):
    with pytest.raises(ValueError, match="bad timestamp"):
        parse_timestamp(text)


def test_parse_timestamp_rejects_negative():
    with pytest.raises(ValueError, match="negative timestamp '-0:05'"):
        parse_timestamp("-0:05")


# CSV


def test_seed_fixture_loads():
    lines = load_lyrics(SEED_LYRICS)
    assert len(lines) == 59
    assert lines[0] == LyricLine(5.0, "A person looking at the sky", 2)
    assert lines[-1] == LyricLine(218.0, "and bring them all to my whiskey jug", 60)
    assert lines[2] == LyricLine(58.0, "I'm curling in my sleeping bag", 4)
    assert lines[3].time == 63.0 and lines[3].text == "all dressed up in my shower cap"
    assert [lyric.time for lyric in lines] == sorted(lyric.time for lyric in lines)


def test_csv_commas_in_text_quoted_and_unquoted(tmp_path):
    path = write(
        tmp_path,
        "song.csv",
        'timestamp,text\n00:01,"Hello, world"\n00:02,Hello, big,  world\n00:03,"say ""hi"", then go"\n',
    )
    assert times_and_texts(load_lyrics(path)) == [
        (1.0, "Hello, world"),
        (2.0, "Hello, big,  world"),
        (3.0, 'say "hi", then go'),
    ]


def test_csv_colon_in_text_is_verbatim(tmp_path):
    path = write(tmp_path, "song.csv", "timestamp,text\n00:10,Note: this is text\n00:12,  at 3:45 we go  \n")
    assert times_and_texts(load_lyrics(path)) == [(10.0, "Note: this is text"), (12.0, "at 3:45 we go")]


def test_csv_lenient_header_bom_crlf_and_blank_lines(tmp_path):
    content = "\ufeff Timestamp , TEXT \r\n\r\n00:05,first\r\n\r\n1:00:00,last\r\n"
    lines = load_lyrics(write(tmp_path, "song.csv", content))
    assert lines == [LyricLine(5.0, "first", 3), LyricLine(3600.0, "last", 5)]


def test_csv_without_header(tmp_path):
    path = write(tmp_path, "song.csv", "00:05,first\n12.5,second")
    assert times_and_texts(load_lyrics(path)) == [(5.0, "first"), (12.5, "second")]


def test_csv_line_numbers_follow_multiline_quotes(tmp_path):
    path = write(tmp_path, "song.csv", 'timestamp,text\n00:01,"two\nlines"\n00:02,after\n')
    lines = load_lyrics(path)
    assert lines == [LyricLine(1.0, "two\nlines", 2), LyricLine(2.0, "after", 4)]


def test_unsorted_input_is_sorted_stably(tmp_path):
    path = write(tmp_path, "song.csv", "timestamp,text\n00:30,c\n00:10,a\n00:30,d\n00:20,b\n")
    lines = load_lyrics(path)
    assert times_and_texts(lines) == [(10.0, "a"), (20.0, "b"), (30.0, "c"), (30.0, "d")]
    assert [lyric.line for lyric in lines] == [3, 5, 2, 4]


# LRC


def test_lrc_tag_forms_metadata_and_several_tags(tmp_path):
    content = (
        "[ar:Someone]\n[ti:A Song]\n[al:Album]\n[by:me]\n[length: 03:15]\n[re:tool]\n[ve:1.0]\n[xyz:other]\n"
        "[00:01.50]first\n"
        "[00:02]second\n"
        "[00:03:25]third\n"
        "[00:04.125]fourth\n"
        "[00:12.00][00:45.10]chorus\n"
        "[01:00.00]\n"
        "[01:05.00]   \n"
    )
    lines = load_lyrics(write(tmp_path, "song.lrc", content))
    assert times_and_texts(lines) == [
        (1.5, "first"),
        (2.0, "second"),
        (3.25, "third"),
        (4.125, "fourth"),
        (12.0, "chorus"),
        (pytest.approx(45.1), "chorus"),
    ]
    assert [lyric.line for lyric in lines] == [9, 10, 11, 12, 13, 13]


def test_lrc_positive_offset_makes_lyrics_sooner_and_clamps(tmp_path):
    content = "[offset:+500]\n[00:00.20]early\n[00:10.00]ten\n"
    lines = load_lyrics(write(tmp_path, "song.lrc", content))
    assert times_and_texts(lines) == [(0.0, "early"), (9.5, "ten")]


def test_lrc_negative_offset_makes_lyrics_later(tmp_path):
    content = "[00:10.00]ten\n[offset:-250]\n"
    assert times_and_texts(load_lyrics(write(tmp_path, "song.lrc", content))) == [(10.25, "ten")]


def test_lrc_word_tags_are_stripped(tmp_path):
    content = "[00:05.00]<00:05.00>Hello <00:05.50>big <00:06.00>world\n[00:07.00]a <b> stays\n"
    lines = load_lyrics(write(tmp_path, "song.lrc", content))
    assert times_and_texts(lines) == [(5.0, "Hello big world"), (7.0, "a <b> stays")]


def test_lrc_colon_in_text_is_verbatim(tmp_path):
    lines = load_lyrics(write(tmp_path, "song.lrc", "[00:05.00]Note: [not a tag] here\n"))
    assert times_and_texts(lines) == [(5.0, "Note: [not a tag] here")]


# SRT


SRT = (
    "1\n00:00:01,000 --> 00:00:03,000\nFirst line\nsecond <i>line</i>\n\n"
    "2\n00:01:02,500 --> 00:01:04,000\n<font color=\"red\">Red</font> words\n\n"
    "3\n01:00:00,250 --> 01:00:01,000\nlate\n"
)


def test_srt_blocks(tmp_path):
    lines = load_lyrics(write(tmp_path, "song.srt", SRT))
    assert lines == [
        LyricLine(1.0, "First line second line", 3),
        LyricLine(62.5, "Red words", 8),
        LyricLine(3600.25, "late", 12),
    ]


def test_srt_crlf_and_bom(tmp_path):
    content = ("\ufeff" + SRT).replace("\n", "\r\n").encode("utf-8")
    lines = load_lyrics(write(tmp_path, "song.srt", content))
    assert times_and_texts(lines) == [(1.0, "First line second line"), (62.5, "Red words"), (3600.25, "late")]
    assert [lyric.line for lyric in lines] == [3, 8, 12]


def test_srt_unsorted_cues_are_sorted(tmp_path):
    content = "2\n00:00:09,000 --> 00:00:10,000\nlater\n\n1\n00:00:02,000 --> 00:00:03,000\nsooner\n"
    lines = load_lyrics(write(tmp_path, "song.srt", content))
    assert times_and_texts(lines) == [(2.0, "sooner"), (9.0, "later")]


# Choosing the format


def test_content_overrides_wrong_extension(tmp_path):
    path = write(tmp_path, "song.csv", "[ti:x]\n[00:05.00]lrc words\n")
    with pytest.warns(UserWarning, match=r"song\.csv.*LRC"):
        lines = load_lyrics(path)
    assert times_and_texts(lines) == [(5.0, "lrc words")]


def test_txt_is_read_by_content(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        srt = load_lyrics(write(tmp_path, "a.txt", SRT))
        csv_lines = load_lyrics(write(tmp_path, "b.TXT", "timestamp,text\n00:05,csv words\n"))
        lrc = load_lyrics(write(tmp_path, "c.txt", "[00:06.00]lrc words\n"))
    assert srt[0].text == "First line second line"
    assert times_and_texts(csv_lines) == [(5.0, "csv words")]
    assert times_and_texts(lrc) == [(6.0, "lrc words")]


def test_uppercase_extension(tmp_path):
    assert times_and_texts(load_lyrics(write(tmp_path, "SONG.LRC", "[00:01.00]hi\n"))) == [(1.0, "hi")]


# Errors: each names the file and the line


@pytest.mark.parametrize(
    "name, content, line, needle",
    [
        ("song.csv", "timestamp,text\n00:01,ok\n00:02,ok\n1:2x,words\n", 4, "bad timestamp '1:2x' (expected M:SS, MM:SS.ff or H:MM:SS)"),
        ("song.csv", "timestamp,text\n00:01,ok\n-0:05,words\n", 3, "negative timestamp '-0:05'"),
        ("song.csv", "timestamp,text\n00:01,ok\n01:38\n", 3, "missing the text column in '01:38'"),
        ("song.csv", "timestamp,text\n00:01,ok\n00:02,   \n", 3, "no text after '00:02'"),
        ("song.csv", "time,words\n00:01,ok\n", 1, "expected a 'timestamp,text' header"),
        ("song.csv", "timestamp,text\n", 1, "no lyric lines found"),
        ("song.csv", "timestamp,text\n\n\n", 1, "no lyric lines found"),
        ("song.csv", "", 1, "empty lyrics file"),
        ("song.csv", "  \n\n", 1, "empty lyrics file"),
        ("song.lrc", "[ar:x]\n[ti:y]\n[00:01.00]\n", 3, "no lyric lines found"),
        ("song.lrc", "[00:01.00]ok\n[00:75.00]bad\n", 2, "bad time tag '[00:75.00]'"),
        ("song.lrc", "[00:01.00]ok\n[-00:05.00]bad\n", 2, "bad tag '[-00:05.00]'"),
        ("song.lrc", "[00:01.00]ok\nno tag here\n", 2, "no time tag in 'no tag here'"),
        ("song.lrc", "[offset:soon]\n[00:01.00]ok\n", 1, "bad offset 'soon'"),
        ("song.srt", "1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:0x,000 --> 00:00:04,000\nbad\n", 6, "bad SRT time '00:00:0x,000'"),
        ("song.srt", "1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\nno timing\n", 6, "expected a timing line"),
        ("song.txt", "just some words\nand more\n", 1, "unknown lyrics format; supported: .csv, .lrc and .srt"),
        ("song.csv", b"timestamp,text\n00:01,caf\xe9\n", 2, "not UTF-8 text (byte 0xe9)"),
        ("song.csv", b"\x89PNG\r\n\x1a\n\x00\x00", 1, "not UTF-8 text (byte 0x89)"),
        ("song.csv", "timestamp,text\n00:01,a\x00b\n".encode("utf-8"), 2, "NUL byte"),
    ],
)
def test_errors_name_file_and_line(tmp_path, name, content, line, needle):
    message = load_error(write(tmp_path, name, content))
    assert message.startswith(f"{tmp_path / name} line {line}: "), message
    assert needle in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    message = load_error(tmp_path / "nope.csv")
    assert message == f"lyrics file not found: {tmp_path / 'nope.csv'}"


def test_folder_is_an_error(tmp_path):
    assert "is a folder" in load_error(tmp_path)


def test_lyrics_error_is_a_value_error():
    assert issubclass(LyricsError, ValueError)


# drop_after


def test_drop_after_warns_and_drops():
    lines = [
        LyricLine(1.0, "keep", 2),
        LyricLine(9.99, "keep too", 3),
        LyricLine(10.0, "at end", 4),
        LyricLine(12.0, "after", 5),
    ]
    with pytest.warns(UserWarning) as record:
        kept = drop_after(lines, 10.0, "lyrics/song.csv")
    assert kept == lines[:2]
    assert len(record) == 1
    message = str(record[0].message)
    assert "lyrics/song.csv" in message
    assert "line 4 'at end'" in message and "line 5 'after'" in message
    assert "keep" not in message


def test_drop_after_keeps_everything_silently():
    lines = [LyricLine(1.0, "a", 2), LyricLine(2.0, "b", 3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert drop_after(lines, 2.5, "x.csv") == lines


def test_drop_after_everything_is_an_error():
    expected = r"x\.csv line 7: every lyric starts at or after the end of the audio \(3\.00s\)"
    with pytest.raises(LyricsError, match=expected):
        drop_after([LyricLine(5.0, "late", 7)], 3.0, "x.csv")


# control characters

# A form feed that would start fake SRT lines (a number, a timing line), BEL, ESC, NEL, U+2028.
HOSTILE = "fake\f2\f00:00:01,000 --> 00:00:02,000\fcue \x07bell \x1b[31mred\x85next\u2028end"
CLEAN = "fake 2 00:00:01,000 --> 00:00:02,000 cue bell [31mred next end"


@pytest.mark.parametrize("name, content", [
    ("a.csv", f"timestamp,text\n00:01,{HOSTILE}\n00:02,déjà vu 君の名は 🎸\tok\n"),
    ("a.lrc", f"[00:01.00]{HOSTILE}\n[00:02.00]déjà vu 君の名は 🎸\tok\n"),
    ("a.srt", f"1\n00:00:01,000 --> 00:00:01,500\n{HOSTILE}\n\n"
              "2\n00:00:02,000 --> 00:00:03,000\ndéjà vu 君の名は 🎸\tok\n"),
])
def test_control_characters_are_removed_and_other_text_kept(tmp_path, name, content):
    path = write(tmp_path, name, content)
    with pytest.warns(UserWarning, match=r"a\.\w+: replaced 7 control character\(s\)"):
        found = load_lyrics(path)
    expected_second = "déjà vu 君の名は 🎸 ok" if name == "a.srt" else "déjà vu 君の名は 🎸\tok"
    assert times_and_texts(found) == [(1.0, CLEAN), (2.0, expected_second)]
    assert [lyric.line for lyric in found] == ([2, 3] if name == "a.csv" else
                                               [1, 2] if name == "a.lrc" else [3, 7])


def test_plain_text_keeps_line_breaks_and_tabs():
    from music2video.song.lyrics import plain_text

    assert plain_text("a\tb\r\nc\nd\re\x0bf\x7f\x9bg") == ("a\tb\r\nc\nd\re fg", 3)


# within_frames


def test_lines_less_than_a_frame_apart_share_a_moment_up_to_a_bound():
    from music2video.song.lyrics import MAX_SHARED, within_frames

    lines = [LyricLine(1.0, "a", 1), LyricLine(1.01, "b", 2), LyricLine(1.02, "c", 3),
             LyricLine(1.03, "d", 4), LyricLine(1.0 + 1 / 30, "next frame", 5),
             LyricLine(2.0, "e", 6), LyricLine(2.0, "f", 7)]
    assert MAX_SHARED == 3
    with pytest.warns(UserWarning) as record:
        kept = within_frames(lines, 30, "x.lrc")
    assert times_and_texts(kept) == [(1.0, "a"), (1.0, "b"), (1.0, "c"), (1.0 + 1 / 30, "next frame"),
                                     (2.0, "e"), (2.0, "f")]
    (message,) = [str(w.message) for w in record]
    assert "x.lrc: 3 lyric line(s) less than a frame" in message
    assert "2 shown with the line before, 1 dropped: line 4 'd' at 1.03s" in message


def test_lines_a_frame_or_more_apart_are_kept_silently():
    from music2video.song.lyrics import within_frames

    lines = [LyricLine(k / 25, f"line {k}", k + 1) for k in range(100)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert within_frames(lines, 25, "x.csv") == lines


def test_a_flood_of_lines_is_bounded_with_one_short_warning():
    from music2video.song.lyrics import MAX_SHARED, within_frames

    lines = [LyricLine(k * 5 / 100_000, f"line number {k}", k + 1) for k in range(100_000)]
    with pytest.warns(UserWarning) as record:
        kept = within_frames(lines, 30, "flood.lrc")
    assert len(kept) <= 5 * 30 * MAX_SHARED
    assert len({lyric.time for lyric in kept}) <= 5 * 30
    (message,) = [str(w.message) for w in record]
    assert len(message) < 400 and message.count("line number") == 3


def test_a_line_too_long_is_cut_with_a_warning():
    from music2video.song.lyrics import MAX_CHARS, within_frames

    lines = [LyricLine(1.0, "la " * 1_000_000, 1), LyricLine(2.0, "short", 2)]
    with pytest.warns(UserWarning, match="1 lyric line.s. longer than") as record:
        kept = within_frames(lines, 30, "x.csv")
    assert [len(lyric.text) for lyric in kept] == [MAX_CHARS, 5]
    assert len(str(record[0].message)) < 300


def test_drop_after_names_only_the_first_few():
    lines = [LyricLine(1.0, "keep", 1)] + [LyricLine(10.0 + k, f"late {k}", k + 2)
                                           for k in range(5000)]
    with pytest.warns(UserWarning) as record:
        drop_after(lines, 5.0, "x.csv")
    message = str(record[0].message)
    assert "dropping 5000 lyric line(s)" in message and len(message) < 300
