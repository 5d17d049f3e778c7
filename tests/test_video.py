"""Tests for music2video.output.video: streaming frames into chunks, joining them with the song, errors."""

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from music2video import ffmpeg
from music2video.ffmpeg import VideoError, read_frames, run_ffmpeg
from music2video.files import part_path
from music2video.output import video
from music2video.output.video import FrameWriter, concat_list, join
from music2video.song import audio
from music2video.testing import demo

W, H, FPS = 64, 48, 30
SR = 44100
STEP = 8  # brightness per frame index in the numbered chunks (30 frames fit in 0-255)


def gradient(i: int) -> np.ndarray:
    """Frame i of a moving gradient, (H, W, 3) uint8."""
    x = (np.arange(W)[None, :] * 4 + np.arange(H)[:, None] * 2 + 8 * i) % 256
    return np.stack([x, np.roll(x, i, axis=1), 255 - x], axis=-1).astype(np.uint8)


def flat(level: int) -> np.ndarray:
    """A flat grey frame, (H, W, 3) uint8."""
    return np.full((H, W, 3), level, np.uint8)


def write_numbered(path: Path, first: int, count: int) -> Path:
    """A chunk whose frame k has brightness (first + k) * STEP: its global index, readable back."""
    with FrameWriter(path, W, H, FPS) as writer:
        for i in range(first, first + count):
            writer.write(flat(i * STEP))
    return path


def frame_indices(path: Path) -> list[int]:
    """The index each decoded frame of a numbered video shows (its mean brightness / STEP)."""
    means = []
    for frame in read_frames(path):
        assert frame.shape == (H, W, 3)
        means.append(frame.mean())
    return [int(round(m / STEP)) for m in means]


def audio_seconds(path: Path) -> float:
    """Seconds of decoded audio in a file."""
    return len(audio.load_audio(path, 16000)) / 16000


def wait_for(path: Path) -> bool:
    """Whether path appears within a generous 20 s (ffmpeg creates its output as it starts)."""
    for _ in range(2000):
        if path.exists():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    """Three seconds of a 440 Hz tone as m4a."""
    y = (0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * SR) / SR)).astype(np.float32)
    return demo.encode_audio(y, SR, tmp_path_factory.mktemp("audio") / "tone.m4a")


@pytest.fixture(scope="module")
def one_second(tmp_path_factory) -> Path:
    """One second of a tone as mp3."""
    y = (0.3 * np.sin(2 * np.pi * 330 * np.arange(SR) / SR)).astype(np.float32)
    return demo.encode_audio(y, SR, tmp_path_factory.mktemp("audio") / "one second.mp3")


@pytest.fixture(scope="module")
def chunks(tmp_path_factory) -> list[Path]:
    """Three numbered chunks of 10, 7 and 13 frames: together frames 0-29."""
    folder = tmp_path_factory.mktemp("chunks")
    return [write_numbered(folder / "chunk_000.mp4", 0, 10),
            write_numbered(folder / "chunk_001.mp4", 10, 7),
            write_numbered(folder / "chunk_002.mp4", 17, 13)]


# --- FrameWriter ------------------------------------------------------------------------------


def test_frame_writer_appears_only_after_close(tmp_path):
    out = tmp_path / "clip.mp4"
    writer = FrameWriter(out, W, H, FPS)
    assert writer.part == part_path(out) == tmp_path / f".clip.{os.getpid()}.part.mp4"
    for i in range(20):
        writer.write(gradient(i))
    assert wait_for(writer.part)  # written under the temporary name...
    assert not out.exists()  # ...and not yet under the final one
    assert writer.close() == out
    assert out.exists() and not writer.part.exists()
    assert writer.count == 20
    frames, seconds = ffmpeg.count_frames(out)
    assert frames == 20
    assert seconds == pytest.approx(20 / FPS, abs=0.5 / FPS)
    info = ffmpeg.probe(out)
    assert info["video"] == ["h264"] and info["audio"] == [] and info["size"] == (W, H)
    assert info["fps"] == FPS


def test_frame_writer_keeps_the_pictures(tmp_path):
    out = tmp_path / "levels.mp4"
    with FrameWriter(out, W, H, FPS) as writer:
        writer.write(flat(40))
        writer.write(torch.full((H, W, 3), 200, dtype=torch.uint8))  # a CPU tensor works too
        writer.write(flat(120))
    assert frame_indices(out) == [5, 25, 15]


def test_frame_writer_repeat(tmp_path):
    out = tmp_path / "held.mp4"
    with FrameWriter(out, W, H, FPS) as writer:
        writer.write(flat(1 * STEP), repeat=3)
        writer.write(flat(2 * STEP), repeat=0)  # shown for no frame
        writer.write(flat(3 * STEP))
        writer.write(flat(4 * STEP), repeat=4)
        assert writer.count == 8
    assert ffmpeg.count_frames(out)[0] == 8
    assert frame_indices(out) == [1, 1, 1, 3, 4, 4, 4, 4]


@pytest.mark.parametrize("shape", [(H, W), (H, W, 4), (W, H, 3), (H + 1, W, 3)])
def test_frame_writer_rejects_wrong_shapes(tmp_path, shape):
    out = tmp_path / "shapes.mp4"
    writer = FrameWriter(out, W, H, FPS)
    writer.write(flat(8))
    with pytest.raises(ValueError, match=r"expected \(48, 64, 3\)"):
        writer.write(np.zeros(shape, np.uint8))
    writer.write(flat(16))  # the writer is still usable
    writer.close()
    assert frame_indices(out) == [1, 2]


def test_frame_writer_context_manager_cleans_up_on_error(tmp_path):
    out = tmp_path / "broken.mp4"
    with pytest.raises(ValueError):
        with FrameWriter(out, W, H, FPS) as writer:
            for i in range(5):
                writer.write(gradient(i))
            assert wait_for(writer.part)
            writer.write(np.zeros((H, W), np.uint8))
    assert not out.exists() and not part_path(out).exists()
    assert list(tmp_path.iterdir()) == []


def test_frame_writer_abort(tmp_path):
    out = tmp_path / "stopped.mp4"
    writer = FrameWriter(out, W, H, FPS)
    for i in range(5):
        writer.write(gradient(i))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


# --- join -------------------------------------------------------------------------------------


def test_join_keeps_every_frame_in_order(tmp_path, chunks, one_second):
    out = join(chunks, one_second, tmp_path / "video.mp4")
    assert out == tmp_path / "video.mp4"
    info = ffmpeg.probe(out)
    assert info["video"] == ["h264"] and info["audio"] == ["aac"]
    assert ffmpeg.count_frames(out)[0] == 30
    assert frame_indices(out) == list(range(30))  # no frame lost or doubled at the joins
    assert audio_seconds(out) == pytest.approx(1.0, abs=0.1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video.mp4"]  # no list or part left


def test_join_creates_the_folder(tmp_path, chunks, song):
    out = tmp_path / "new" / "deeper" / "video.mp4"
    join(chunks[:1], song, out, audio_seconds=10 / FPS)
    assert out.is_file()
    assert frame_indices(out) == list(range(10))


def test_join_audio_seconds_trims_the_song(tmp_path, chunks, song):
    full = join(chunks, song, tmp_path / "full.mp4")
    trimmed = join(chunks, song, tmp_path / "trimmed.mp4", audio_seconds=1.0)
    assert audio_seconds(full) == pytest.approx(3.0, abs=0.1)
    assert audio_seconds(trimmed) == pytest.approx(1.0, abs=0.1)
    assert ffmpeg.count_frames(trimmed)[0] == 30


@pytest.mark.parametrize("where", [0, 1, 3])
def test_join_missing_chunk_fails_naming_it(tmp_path, chunks, song, where):
    out = tmp_path / "video.mp4"
    listed = list(chunks)
    listed.insert(where, tmp_path / "missing.mp4")
    with pytest.raises(VideoError, match="missing chunk.*missing.mp4") as info:
        join(listed, song, out)
    assert str(out) in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no video, part or list left


def test_join_unreadable_later_chunk_fails(tmp_path, chunks, song):
    """ffmpeg's concat skips a chunk it cannot read; -xerror turns that into a failure."""
    out = tmp_path / "video.mp4"
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoError, match="ffmpeg failed to join"):
        join([chunks[0], bad, *chunks[1:]], song, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4"]


def test_odd_file_names(tmp_path, one_second):
    folder = tmp_path / "my clips ♪"
    folder.mkdir()
    names = ["it's chunk 1.mp4", "chunk 'two'.mp4", "bön œuvre 三.mp4"]
    parts = [write_numbered(folder / names[0], 0, 4), write_numbered(folder / names[1], 4, 3),
             write_numbered(folder / names[2], 7, 5)]
    listing = concat_list(parts, tmp_path / "list.txt", folder)
    lines = listing.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "ffconcat version 1.0"
    assert lines[1] == "file 'file:it'\\''s chunk 1.mp4'"
    assert len(lines) == 4 and "三" in lines[3]
    song = Path(one_second)
    odd_song = folder / "l'été song.mp3"
    odd_song.write_bytes(song.read_bytes())
    out = join(parts, odd_song, folder / "the 'final' vidéo.mp4")
    assert out.is_file()
    assert frame_indices(out) == list(range(12))
    assert ffmpeg.probe(out)["audio"] == ["aac"]


@pytest.mark.parametrize("name", ["line\nbreak", "carriage\rreturn", "q'uo\"te \\ ?#%20 :x"])
def test_join_in_a_folder_whose_name_holds_a_line_break_or_quotes(tmp_path, chunks, one_second,
                                                                  name):
    """Only the chunks' own names go into ffmpeg's concat list, never the folders above them:
    a run folder, song or video named with a line break (from an -ap folder) joins."""
    folder = tmp_path / name / f"run {name}"
    folder.mkdir(parents=True)
    parts = [folder / f"chunk_{k:05d}.mp4" for k in range(len(chunks))]
    for part, chunk in zip(parts, chunks):
        part.write_bytes(chunk.read_bytes())
    odd_song = tmp_path / name / f"song {name}.mp3"
    odd_song.write_bytes(Path(one_second).read_bytes())
    out = join(parts, odd_song, tmp_path / name / f"video {name}.mp4")
    assert frame_indices(out) == list(range(30))
    assert audio_seconds(out) == pytest.approx(1.0, abs=0.1)
    assert sorted(p.name for p in (tmp_path / name).iterdir()) == sorted(
        [folder.name, odd_song.name, out.name])  # no list or part left


def test_a_chunk_named_with_a_line_break_is_one_line(tmp_path, chunks, song):
    odd = tmp_path / "chunk\n1.mp4"
    odd.write_bytes(chunks[0].read_bytes())
    with pytest.raises(VideoError, match="line break") as caught:
        join([chunks[1], odd], song, tmp_path / "video.mp4")
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [odd.name]


def test_concat_list_names_chunks_below_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    listing = concat_list([Path("a.mp4"), Path("sub/b.mp4")], tmp_path / "l.txt", tmp_path)
    assert listing.read_text(encoding="utf-8") == (
        "ffconcat version 1.0\nfile 'file:a.mp4'\nfile 'file:sub/b.mp4'\n")
    assert video.chunks_folder([Path("a.mp4"), Path("sub/b.mp4")]) == tmp_path.resolve()


# --- join with subtitles ---------------------------------------------------------------------


def srt_blocks(text: str) -> list[tuple[float, float, str]]:
    """(start, end, text) of each SRT block, parsed here rather than by the module under test."""
    found = []
    for block in text.strip().split("\n\n"):
        _, timing, *words = block.split("\n")
        start, end = (sum(float(part) * unit for part, unit in
                          zip(t.replace(",", ".").split(":"), (3600, 60, 1)))
                      for t in timing.split(" --> "))
        found.append((start, end, "\n".join(words)))
    return found


def stream_report(path: Path) -> str:
    """ffmpeg's description of a file's streams."""
    import subprocess

    return subprocess.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True).stderr


def test_join_adds_the_lyrics_as_a_soft_subtitle_track(tmp_path, chunks, one_second):
    from music2video.output.subtitles import Cue, write_srt
    from music2video.song.lyrics import load_lyrics

    cues = [Cue(0.1, 0.4, "first line"), Cue(0.4, 0.65, "déjà vu 君の名は\nand a second"),
            Cue(0.8, 1.0, "last: words")]
    srt = write_srt(tmp_path / "lyrics.srt", cues)
    out = join(chunks, one_second, tmp_path / "video.mp4", subtitles=srt)
    info = ffmpeg.probe(out)
    assert info["video"] == ["h264"] and info["audio"] == ["aac"]
    assert info["subtitle"] == ["mov_text"]
    assert frame_indices(out) == list(range(30))  # the pictures are untouched
    text = ffmpeg.read_subtitles(out)
    back = srt_blocks(text)
    assert [c for _, _, c in back] == [c.text for c in cues]
    assert [t for a, b, _ in back for t in (a, b)] == pytest.approx(
        [t for c in cues for t in (c.start, c.end)], abs=0.0015)
    (tmp_path / "back.srt").write_text(text, encoding="utf-8")
    assert [l.time for l in load_lyrics(tmp_path / "back.srt")] == pytest.approx(
        [0.1, 0.4, 0.8], abs=0.0015)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.srt", "lyrics.srt", "video.mp4"]


@pytest.mark.slow
def test_subtitle_track_is_on_by_default(tmp_path, chunks, one_second):
    from music2video.output.subtitles import Cue, write_srt

    srt = write_srt(tmp_path / "lyrics.srt", [Cue(0.1, 0.4, "words")])
    out = join(chunks[:1], one_second, tmp_path / "video.mp4", subtitles=srt)
    report = stream_report(out)
    line = next(l for l in report.splitlines() if "Subtitle: mov_text" in l)
    assert "(default)" in line and "handler_name    : Lyrics" in report


def test_join_without_subtitles_has_no_subtitle_track(tmp_path, chunks, one_second):
    out = join(chunks, one_second, tmp_path / "video.mp4")
    assert ffmpeg.probe(out)["subtitle"] == []
    with pytest.raises(VideoError, match="failed to read the subtitles"):
        ffmpeg.read_subtitles(out)


def test_join_missing_subtitle_file_fails_naming_it(tmp_path, chunks, one_second):
    out = tmp_path / "video.mp4"
    with pytest.raises(VideoError, match="subtitle file .*nothing.srt not found"):
        join(chunks, one_second, out, subtitles=tmp_path / "nothing.srt")
    assert list(tmp_path.iterdir()) == []


def test_partial_join_with_clipped_subtitles(tmp_path, chunks, song):
    from music2video.output.subtitles import Cue, clip, write_srt

    cues = [Cue(0.2, 0.5, "in"), Cue(0.9, 1.5, "across the end"), Cue(2.0, 2.5, "after")]
    srt = write_srt(tmp_path / "odd 'name' é.srt", clip(cues, 1.0))
    out = join(chunks, song, tmp_path / "partial.mp4", audio_seconds=1.0, subtitles=srt)
    assert srt_blocks(ffmpeg.read_subtitles(out)) == [(0.2, 0.5, "in"), (0.9, 1.0, "across the end")]
    assert ffmpeg.count_frames(out) == (30, pytest.approx(1.0, abs=0.5 / FPS))


# --- run_ffmpeg -------------------------------------------------------------------------------


def test_run_ffmpeg_bad_option():
    with pytest.raises(VideoError, match="ffmpeg failed to do the thing: .*Unrecognized option "
                                         "'frobnicate'"):
        run_ffmpeg(["-frobnicate"], "do the thing")


def test_run_ffmpeg_missing_input(tmp_path):
    with pytest.raises(VideoError) as info:
        run_ffmpeg(["-i", str(tmp_path / "nothing.wav"), str(tmp_path / "out.wav")], "convert")
    message = str(info.value)
    assert message.startswith("ffmpeg failed to convert: ")
    assert "No such file or directory" in message and "nothing.wav" in message
    assert "\n" not in message
    assert not (tmp_path / "out.wav").exists()


def test_read_frames_closes_ffmpeg_however_the_loop_ends(tmp_path):
    import warnings

    path = write_numbered(tmp_path / "n.mp4", 0, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        assert len(list(read_frames(path))) == 6
        frames = read_frames(path)
        next(frames)
        frames.close()
        import gc

        gc.collect()
    with pytest.raises(VideoError, match="no video stream"):
        list(read_frames(tmp_path / "missing.mp4"))


def test_join_never_writes_through_a_link_at_its_temporary_names(tmp_path, chunks, song):
    import os

    out = tmp_path / "video.mp4"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    part_path(out).symlink_to(victim)
    (tmp_path / f".video.{os.getpid()}.concat.txt").symlink_to(victim)
    join(chunks[:1], song, out, audio_seconds=10 / FPS)
    assert victim.read_text() == "precious"
    assert frame_indices(out) == list(range(10))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim.txt", "video.mp4"]
