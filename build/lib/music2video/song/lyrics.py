"""Timestamped lyrics files (CSV, LRC, SRT) read into a sorted list of lines."""

from __future__ import annotations

import csv
import io
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import UserError

_TIMESTAMP_FORMS = "expected M:SS, MM:SS.ff or H:MM:SS"
_EXTENSIONS = {".csv": "csv", ".lrc": "lrc", ".srt": "srt"}
_EXAMPLES = {
    "csv": "'timestamp,text' rows such as '00:05,some words'",
    "lrc": "lines such as '[00:05.00]some words'",
    "srt": "SRT blocks: a number, '00:00:05,000 --> 00:00:08,000', the words, a blank line",
}
MAX_SHARED = 3  # lyric lines that may share one moment (lines less than a frame apart)
MAX_CHARS = 500  # longest lyric line kept, in characters (CLIP reads 77 tokens at most)
NAMED = 3  # lines a warning names, at most
_SUPPORTED = "CSV ('00:05,some words'), LRC ('[00:05.00]some words') or SRT"
# H:MM:SS(.f) or M:SS(.f), else plain seconds; the groups are read in parse_timestamp.
_CLOCK = re.compile(
    r"(?:(?P<h>\d+):(?P<hm>[0-5]\d)|(?P<m>\d+)):(?P<s>[0-5]\d(?:\.\d+)?)|(?P<plain>\d+(?:\.\d+)?)",
    re.ASCII,
)
_NEWLINE = re.compile(r"\r\n|\r|\n")
_CSV_HEADER = ["timestamp", "text"]
_LRC_TAG = re.compile(r"\s*\[([^\]]*)\]")
_LRC_TIME = re.compile(r"(\d+):(\d\d)(?:[.:](\d+))?", re.ASCII)
_LRC_META = re.compile(r"([A-Za-z][\w-]*)\s*:(.*)", re.DOTALL)
_LRC_OFFSET = re.compile(r"[+-]?\d+", re.ASCII)
_LRC_WORD_TAG = re.compile(r"<\d+:\d\d(?:[.:]\d+)?>", re.ASCII)
_LRC_SNIFF = re.compile(r"\s*(?:\[[^\]]*\]\s*)*\[\d+:\d\d", re.ASCII)
_SRT_TIMING = re.compile(r"(\S+?)\s*-->\s*(\S+)(?:\s.*)?")
_SRT_SNIFF = re.compile(r"\d+:\d\d:\d\d[,.]\d+\s*-->", re.ASCII)
_SRT_MARKUP = re.compile(r"</?[A-Za-z][^>]*>|\{\\[^}]*\}")
# Control characters (C0, DEL, C1) and the Unicode line/paragraph separators, but not the tab
# or the line breaks \n and \r, which structure the file: a form feed would start a subtitle
# line, BEL or ESC would reach the .srt raw.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")


class LyricsError(UserError, ValueError):
    """A lyrics file that cannot be read; the message names the file, the line number and the fix."""


@dataclass(frozen=True)
class LyricLine:
    time: float  # seconds from the start of the song
    text: str  # the line, verbatim (stripped of surrounding whitespace only); a ':' is just text
    line: int  # 1-based line number in the source file (for messages)


def parse_timestamp(text: str) -> float:
    """Seconds from 'M:SS', 'MM:SS', 'MM:SS.ff', 'H:MM:SS(.fff)' or plain seconds '12.5'; raises ValueError."""
    stripped = text.strip()
    if stripped.startswith("-"):
        raise ValueError(f"negative timestamp {text!r} (times count from the start of the song)")
    match = _CLOCK.fullmatch(stripped)
    if match is None:
        raise ValueError(f"bad timestamp {text!r} ({_TIMESTAMP_FORMS})")
    if match["plain"] is not None:
        return float(match["plain"])
    minutes = 60 * int(match["h"]) + int(match["hm"]) if match["h"] is not None else int(match["m"])
    return 60 * minutes + float(match["s"])


def load_lyrics(path: Path) -> list[LyricLine]:
    """Reads a CSV, LRC or SRT lyrics file, chosen by extension with a content check; sorted by time."""
    path = Path(path)
    text = _read_text(path)
    fmt = _choose_format(path, text)
    lines = _parser(fmt)(text, path)
    if not lines:
        last = len(_split_lines(text.rstrip("\r\n")))
        raise LyricsError(f"{path} line {last}: no lyric lines found (expected {_EXAMPLES[fmt]})")
    return sorted(lines, key=lambda lyric: lyric.time)


def drop_after(lines: list[LyricLine], duration: float, path) -> list[LyricLine]:
    """Drops lines at or after the end of the audio, with one warnings.warn giving their count
    and naming the first few (number and text)."""
    kept = [lyric for lyric in lines if lyric.time < duration]
    dropped = [lyric for lyric in lines if lyric.time >= duration]
    if dropped and not kept:
        raise LyricsError(
            f"{path} line {dropped[0].line}: every lyric starts at or after the end of the audio "
            f"({duration:.2f}s); check that the lyrics belong to this audio file"
        )
    if dropped:
        warnings.warn(
            f"{path}: dropping {len(dropped)} lyric line(s) at or after the end of the audio "
            f"({duration:.2f}s): {named(dropped)}",
            stacklevel=2,
        )
    return kept


def within_frames(lines: list[LyricLine], fps: float, path) -> list[LyricLine]:
    """Bounds what lyrics can do to a run (sorted lines in, sorted lines out): a line less than
    a frame after the moment before it joins that moment, up to MAX_SHARED lines a moment, and
    the rest are dropped; text past MAX_CHARS is cut. One warning each, with counts and the
    first few lines."""
    kept, merged, dropped, moment, shared = [], [], [], None, 0
    for lyric in lines:
        if moment is None or lyric.time - moment >= 1 / fps - 1e-9:
            moment, shared = lyric.time, 0
        if shared >= MAX_SHARED:
            dropped.append(lyric)
            continue
        shared += 1
        kept.append(replace(lyric, time=moment))
        if lyric.time != moment:
            merged.append(lyric)
    if merged or dropped:
        warnings.warn(
            f"{path}: {len(merged) + len(dropped)} lyric line(s) less than a frame (1/{fps:g} s) "
            f"after another (at most {MAX_SHARED} lines share a moment): {len(merged)} shown "
            f"with the line before, {len(dropped)} dropped: {named(dropped or merged)}",
            stacklevel=2,
        )
    long = [lyric for lyric in kept if len(lyric.text) > MAX_CHARS]
    if long:
        warnings.warn(f"{path}: {len(long)} lyric line(s) longer than {MAX_CHARS} characters, "
                      f"cut there: {named(long)}", stacklevel=2)
    return [replace(lyric, text=lyric.text[:MAX_CHARS]) if len(lyric.text) > MAX_CHARS else lyric
            for lyric in kept]


def named(lines: list[LyricLine]) -> str:
    """The first few lines for a warning: number, text (shortened) and time; '…' for more."""
    shown = "; ".join(f"line {lyric.line} {_short(lyric.text)!r} at {lyric.time:.2f}s"
                      for lyric in lines[:NAMED])
    return shown + ("; …" if len(lines) > NAMED else "")


def _short(text: str, chars: int = 40) -> str:
    """Text cut to `chars` characters, with '…' when cut."""
    return text if len(text) <= chars else text[:chars - 1] + "…"


def _read_text(path: Path) -> str:
    """The file's text, or a LyricsError if it is missing, binary or empty."""
    if not path.exists():
        raise LyricsError(f"lyrics file not found: {path}")
    if path.is_dir():
        raise LyricsError(f"lyrics path is a folder, not a file: {path}")
    text = _decode(path.read_bytes(), path)
    text, removed = plain_text(text)
    if removed:
        warnings.warn(f"{path}: replaced {removed} control character(s) (form feed, BEL, ESC, "
                      "...) with a space or nothing; lyrics are plain text", stacklevel=3)
    if not text.strip():
        raise LyricsError(f"{path} line 1: empty lyrics file (expected {_SUPPORTED})")
    return text


def plain_text(text: str) -> tuple[str, int]:
    """Text without control characters (tab, \\n and \\r kept): a blank one (form
    feed, U+2028) becomes a space, any other (BEL, ESC) goes; and how many there were."""
    return _CONTROL.subn(lambda m: " " if m[0].isspace() else "", text)


def _decode(data: bytes, path: Path) -> str:
    """UTF-8 text (a BOM is dropped), or a LyricsError naming the line of the first bad byte."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LyricsError(
            f"{path} line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
            f"save the lyrics as UTF-8 {_SUPPORTED}"
        ) from None
    if "\0" in text:
        line = text[: text.index("\0")].count("\n") + 1
        raise LyricsError(
            f"{path} line {line}: NUL byte, so this is binary or UTF-16, not UTF-8 text; "
            f"save the lyrics as UTF-8 {_SUPPORTED}"
        )
    return text


def _split_lines(text: str) -> list[str]:
    """Lines split on \\n, \\r\\n or \\r (unlike str.splitlines, nothing else)."""
    return _NEWLINE.split(text)


def _choose_format(path: Path, text: str) -> str:
    """'csv', 'lrc' or 'srt': what the content shows, else what the extension says."""
    by_name = _EXTENSIONS.get(path.suffix.lower())
    by_content = _sniff(text)
    if by_name and by_content and by_name != by_content:
        warnings.warn(
            f"{path} is named {path.suffix} but its content is {by_content.upper()}; "
            f"reading it as {by_content.upper()}",
            stacklevel=3,
        )
    fmt = by_content or by_name
    if fmt is None:
        raise LyricsError(
            f"{path} line {_first_line(text)[0]}: unknown lyrics format; "
            f"supported: .csv, .lrc and .srt files holding {_SUPPORTED}"
        )
    return fmt


def _first_line(text: str) -> tuple[int, str]:
    """The 1-based number and the stripped text of the first non-blank line."""
    return next((n, raw.strip()) for n, raw in enumerate(_split_lines(text), 1) if raw.strip())


def _sniff(text: str) -> str | None:
    """The format the content clearly shows, or None."""
    number, first = _first_line(text)
    second = next((raw.strip() for raw in _split_lines(text)[number:] if raw.strip()), "")
    if _SRT_SNIFF.match(first) or (first.isdigit() and _SRT_SNIFF.match(second)):
        return "srt"
    if first.startswith("[") and any(_LRC_SNIFF.match(raw) for raw in _split_lines(text)):
        return "lrc"
    if _is_csv_header(first.split(",")) or ("," in first and _is_timestamp(first.split(",")[0].strip('"'))):
        return "csv"
    return None


def _parser(fmt: str):
    """The parse function for a format name."""
    return {"csv": _parse_csv, "lrc": _parse_lrc, "srt": _parse_srt}[fmt]


def _is_timestamp(text: str) -> bool:
    """Whether parse_timestamp accepts the text."""
    try:
        parse_timestamp(text)
    except ValueError:
        return False
    return True


def _is_csv_header(row: list[str]) -> bool:
    """Whether a row is the 'timestamp,text' header (any case, any surrounding spaces)."""
    return [field.strip().lower() for field in row] == _CSV_HEADER


# CSV


def _parse_csv(text: str, path: Path) -> list[LyricLine]:
    """Rows of 'timestamp,text' after an optional header; blank rows are skipped."""
    rows = [(number, row) for number, row in _csv_rows(text, path) if any(f.strip() for f in row)]
    return [_csv_line(row, number, path) for number, row in _drop_csv_header(rows, path)]


def _csv_rows(text: str, path: Path):
    """Yields (first line number, fields) for each CSV row."""
    reader = csv.reader(io.StringIO(text, newline=""))
    number = 1
    try:
        for row in reader:
            yield number, row
            number = reader.line_num + 1
    except csv.Error as exc:
        raise LyricsError(f"{path} line {reader.line_num}: {exc} (check the quotes)") from None


def _drop_csv_header(rows: list, path: Path) -> list:
    """The rows without the header; a first row that is neither header nor lyric is an error."""
    if not rows or _is_csv_header(rows[0][1]):
        return rows[1:]
    number, first = rows[0]
    if _is_timestamp(first[0]):
        return rows
    raise LyricsError(
        f"{path} line {number}: expected a 'timestamp,text' header or a first row such as "
        f"'00:05,some words', got {','.join(first)!r}"
    )


def _csv_line(row: list[str], number: int, path: Path) -> LyricLine:
    """One CSV row; fields after the first are the text, rejoined with ','."""
    if len(row) < 2:
        raise LyricsError(
            f"{path} line {number}: missing the text column in {row[0]!r} "
            f"(expected 'timestamp,text' such as '00:05,some words')"
        )
    try:
        time = parse_timestamp(row[0])
    except ValueError as exc:
        raise LyricsError(f"{path} line {number}: {exc}") from None
    text = ",".join(row[1:]).strip()
    if not text:
        raise LyricsError(
            f"{path} line {number}: no text after {row[0].strip()!r} "
            f"(a lyric with no words cannot guide anything; add the words or delete the row)"
        )
    return LyricLine(time, text, number)


# LRC


def _parse_lrc(text: str, path: Path) -> list[LyricLine]:
    """LRC lines; a tag with no text after it (an instrumental or blank marker) gives no lyric line.

    Metadata tags are ignored except [offset:ms], which moves every line ms/1000 seconds sooner
    (clamped at 0); several time tags on a line give one lyric line each; <mm:ss.xx> word tags
    are stripped.
    """
    offset, entries = 0.0, []
    for number, raw in enumerate(_split_lines(text), 1):
        tags, rest = _lrc_tags(raw)
        if not tags and raw.strip():
            raise LyricsError(
                f"{path} line {number}: no time tag in {raw.strip()!r} (expected {_EXAMPLES['lrc']})"
            )
        times, line_offset = _lrc_tag_values(tags, path, number)
        offset = offset if line_offset is None else line_offset
        words = _strip_word_tags(rest)
        entries += [(time, words, number) for time in times if words]
    return [LyricLine(max(0.0, time - offset), words, number) for time, words, number in entries]


def _lrc_tags(raw: str) -> tuple[list[str], str]:
    """The [..] tags at the start of a line, and the text after them."""
    tags, pos = [], 0
    while match := _LRC_TAG.match(raw, pos):
        tags.append(match[1])
        pos = match.end()
    return tags, raw[pos:]


def _lrc_tag_values(tags: list[str], path: Path, number: int) -> tuple[list[float], float | None]:
    """The times of a line's tags, and its [offset:] in seconds if it has one."""
    times, offset = [], None
    for tag in tags:
        if time_match := _LRC_TIME.fullmatch(tag.strip()):
            times.append(_lrc_time(time_match, tag, path, number))
        elif meta := _LRC_META.fullmatch(tag.strip()):
            offset = _lrc_offset(meta[2], path, number) if meta[1].lower() == "offset" else offset
        else:
            raise LyricsError(
                f"{path} line {number}: bad tag '[{tag}]' "
                f"(expected a time such as [01:23.45] or metadata such as [ar:Artist])"
            )
    return times, offset


def _lrc_time(match: re.Match, tag: str, path: Path, number: int) -> float:
    """Seconds of an [mm:ss], [mm:ss.xx], [mm:ss.xxx] or [mm:ss:xx] tag."""
    try:
        return parse_timestamp(f"{match[1]}:{match[2]}.{match[3] or 0}")
    except ValueError:
        raise LyricsError(f"{path} line {number}: bad time tag '[{tag}]' (expected [mm:ss.xx])") from None


def _lrc_offset(value: str, path: Path, number: int) -> float:
    """Seconds of an [offset:+/-ms] tag's value."""
    if not _LRC_OFFSET.fullmatch(value.strip()):
        raise LyricsError(
            f"{path} line {number}: bad offset {value!r} (expected milliseconds such as [offset:+500])"
        )
    return int(value) / 1000


def _strip_word_tags(text: str) -> str:
    """Text without <mm:ss.xx> word tags (spaces they leave are collapsed)."""
    stripped = _LRC_WORD_TAG.sub("", text)
    return " ".join(stripped.split()) if stripped != text else stripped.strip()


# SRT


def _parse_srt(text: str, path: Path) -> list[LyricLine]:
    """SRT cues at their start times; a cue's text lines are joined with a space, markup dropped."""
    cues = (_srt_cue(block, path) for block in _blocks(text))
    return [cue for cue in cues if cue is not None]


def _blocks(text: str) -> list[list[tuple[int, str]]]:
    """Runs of non-blank lines as (1-based number, stripped line) pairs."""
    blocks, current = [], []
    for number, raw in enumerate(_split_lines(text), 1):
        if raw.strip():
            current.append((number, raw.strip()))
        elif current:
            blocks.append(current)
            current = []
    return blocks + [current] if current else blocks


def _srt_cue(block: list[tuple[int, str]], path: Path) -> LyricLine | None:
    """One SRT block (optional cue number, timing line, text lines); None if it has no words."""
    rest = block[1:] if block[0][1].isdigit() else block
    number, timing_text = rest[0] if rest else block[0]
    timing = _SRT_TIMING.fullmatch(timing_text) if rest else None
    if timing is None:
        raise LyricsError(
            f"{path} line {number}: expected a timing line such as '00:00:05,000 --> 00:00:08,000' "
            f"(after an optional cue number), got {timing_text!r}"
        )
    words = " ".join(_SRT_MARKUP.sub("", " ".join(raw for _, raw in rest[1:])).split())
    return LyricLine(_srt_time(timing[1], path, number), words, rest[1][0]) if words else None


def _srt_time(token: str, path: Path, number: int) -> float:
    """Seconds of an SRT 'HH:MM:SS,mmm' time."""
    try:
        return parse_timestamp(token.replace(",", "."))
    except ValueError:
        raise LyricsError(
            f"{path} line {number}: bad SRT time {token!r} (expected HH:MM:SS,mmm --> HH:MM:SS,mmm)"
        ) from None
