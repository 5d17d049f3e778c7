"""What a user sees and keeps: subtitles, burnt-in lyrics, the storyboard, drafts and the report."""

import hashlib
import json
from pathlib import Path

import pytest
from helpers import command, decoded_frames, run_script, video_stats
from PIL import Image

from music2video import ffmpeg
from music2video.output import storyboard
from music2video.song.lyrics import load_lyrics

pytestmark = pytest.mark.slow  # runs the scripts or Ray end to end

FPS = 30
SIZE = 64
LYRICS = ["00:01.5,café au lait", "00:04,富士山の夜明け", "00:07,a lighthouse"]


def small_run(out: str, song: Path, lyrics: Path | None, model_flags, *extra) -> list[str]:
    """A small run: 64², few steps, fixed seed."""
    return command(song, out, "--precision", "fp32", "-q", *extra, lyrics=lyrics,
                   models=model_flags, size=SIZE, seed=4)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, short_song, lyrics_file, model_flags) -> dict:
    """The same song and lyrics: plain, with burnt-in lyrics, as a draft, in interpolate mode."""
    cwd = tmp_path_factory.mktemp("runs")
    made = {}
    for name, script, extra in (("plain", "generate.py", []),
                                ("burnt", "generate.py", ["--burn_lyrics"]),
                                ("interp", "generate_interpolate.py", [])):
        result = run_script(script, small_run(f"{name}/v.png", short_song, lyrics_file,
                                            model_flags, *extra), cwd)
        assert result.returncode == 0, result.stderr
        made[name] = cwd / name
    before = folder_digest(made["plain"] / "v")
    draft = run_script("generate.py", small_run("plain/v.png", short_song, lyrics_file,
                                              model_flags, "--draft"), cwd)
    assert draft.returncode == 0, draft.stderr
    return {"cwd": cwd, **made, "plain_before_draft": before, "draft_stderr": draft.stderr}


def folder_digest(folder: Path) -> dict:
    """Every file of a folder by name, with its content's digest."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file()}


def cue_starts(srt_text: str) -> list[tuple[float, str]]:
    """(start seconds, text) of each cue of an SRT text."""
    cues = []
    for block in srt_text.strip().split("\n\n"):
        lines = block.strip().splitlines()
        start = lines[1].split(" --> ")[0]
        h, m, rest = start.split(":")
        s, ms = rest.split(",")
        cues.append((int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000, " ".join(lines[2:])))
    return cues


@pytest.mark.parametrize("name", ["plain", "interp"])
def test_the_video_carries_every_lyric_line_as_a_subtitle_at_its_timestamp(runs, name):
    mp4 = runs[name] / "v.mp4"
    assert ffmpeg.probe(mp4)["subtitle"] == ["mov_text"]
    expected = [(1.5, "café au lait"), (4.0, "富士山の夜明け"), (7.0, "a lighthouse")]
    for (start, text), (want_start, want_text) in zip(cue_starts(ffmpeg.read_subtitles(mp4)),
                                                      expected, strict=True):
        assert abs(start - want_start) <= 0.002 and text == want_text
    srt = runs[name] / "v.srt"
    assert [(line.time, line.text) for line in load_lyrics(srt)] == expected


def test_a_run_without_lyrics_has_no_subtitles(tmp_path, short_song, model_flags):
    result = run_script("generate.py", small_run("o/v.png", short_song, None, model_flags, "-ips",
                                               "1"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert ffmpeg.probe(tmp_path / "o" / "v.mp4")["subtitle"] == []
    assert not (tmp_path / "o" / "v.srt").exists()


def test_burnt_lyrics_change_the_bottom_band_during_a_lyric_only(runs):
    plain = decoded_frames(runs["plain"] / "v.mp4")
    burnt = decoded_frames(runs["burnt"] / "v.mp4")
    assert len(plain) == len(burnt)
    row = SIZE * 3  # bytes per row of an RGB frame
    band = SIZE * 2 // 3 * row  # the lowest third of the picture
    cues = [(round(1.5 * FPS), round(4 * FPS)), (round(4 * FPS), round(7 * FPS)),
            (round(7 * FPS), len(plain))]
    during = {k for a, b in cues for k in range(a, b)}
    for k, (p, b) in enumerate(zip(plain, burnt)):
        if k in during:
            assert p[band:] != b[band:], f"frame {k} shows no lyric"
        else:
            assert p == b, f"frame {k} changed outside a lyric"
    assert ffmpeg.probe(runs["burnt"] / "v.mp4")["subtitle"] == []  # no second copy as a track
    assert (runs["burnt"] / "v.srt").is_file()


def test_the_storyboard_has_a_labelled_cell_per_segment(runs):
    manifest = json.loads((runs["plain"] / "v" / "manifest.json").read_text())
    count = len(manifest["segments"])
    sheet = runs["plain"] / "v_storyboard.png"
    with Image.open(sheet) as img:
        assert img.size == storyboard.sheet_size(count)
    thumbs = sorted((runs["plain"] / "v").glob("thumb_*.png"))
    assert len(thumbs) == count
    cells = storyboard.layout(manifest["segments"])
    assert [c.label for c in cells if c.lyric] == ["café au lait", "富士山の夜明け", "a lighthouse"]


def test_the_report_agrees_with_the_video_and_the_manifest(runs):
    run_dir = runs["plain"] / "v"
    report = json.loads((run_dir / "report.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stats = video_stats(runs["plain"] / "v.mp4")
    assert report["video_frames"] == stats["frames"] == manifest["segments"][-1]["frame_end"]
    assert abs(report["video_seconds"] - stats["seconds"]) < 1e-6
    assert report["frame_difference"] == stats["frames"] - round(report["song_seconds"] * FPS)
    assert abs(report["frame_difference"]) <= 1
    assert report["segments"] == len(manifest["segments"])
    assert report["steps"] == sum(s["iterations"] for s in manifest["segments"])
    assert report["steps_this_run"] == report["steps"] and not report["resumed"]
    assert report["lyric_lines_given"] == report["lyric_lines_used"] == 3
    assert report["precision"] == "fp32" and report["device"] == "cpu"
    assert report["realtime_factor"] == pytest.approx(report["wall_seconds"] / report["song_seconds"])
    assert report["steps_per_second"] == pytest.approx(report["steps"] / report["render_seconds"])
    assert report["peak_ram_mb"] > 0 and report["peak_gpu_mb"] is None
    assert Path(report["outputs"]["video"]) == (runs["plain"] / "v.mp4").resolve()
    assert set(report["sync"]) >= {"median_offset_frames", "share_within_1", "count"}


def test_a_draft_is_synced_smaller_and_leaves_the_full_run_alone(runs):
    draft = runs["plain"] / "v_draft.mp4"
    stats = video_stats(draft)
    full = video_stats(runs["plain"] / "v.mp4")
    assert stats["size"] == (SIZE // 2, SIZE // 2) and full["size"] == (SIZE, SIZE)
    assert stats["frames"] == full["frames"]
    assert abs(stats["frames"] / FPS - stats["audio_seconds"]) <= 1 / FPS
    plan = json.loads((runs["plain"] / "v_draft" / "manifest.json").read_text())["segments"]
    full_plan = json.loads((runs["plain"] / "v" / "manifest.json").read_text())["segments"]
    assert [(s["start"], s["end"]) for s in plan] == [(s["start"], s["end"]) for s in full_plan]
    assert [s["iterations"] for s in plan] == [max(1, round(s["iterations"] / 5))
                                              for s in full_plan]
    assert folder_digest(runs["plain"] / "v") == runs["plain_before_draft"]
    assert (runs["plain"] / "v_draft_storyboard.png").is_file()


def test_generate_interpolate_writes_the_storyboard_and_the_report_too(runs):
    run_dir = runs["interp"] / "v"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    with Image.open(runs["interp"] / "v_storyboard.png") as img:
        assert img.size == storyboard.sheet_size(len(manifest["segments"]))
    report = json.loads((run_dir / "report.json").read_text())
    assert report["video_frames"] == manifest["segments"][-1]["frame_end"]
    assert report["lyric_lines_used"] == report["lyric_lines_given"] == 3
