"""Tests for music2video.output.report: report.json's fields, their consistency, and the summary."""

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from tqdm import tqdm

from music2video import ffmpeg
from music2video.driver.folder import segment_record
from music2video.output import report, video
from music2video.output.video import FrameWriter
from music2video.song import segments as schedule
from music2video.song.lyrics import LyricLine
from music2video.testing import demo

SR, FPS = 44100, 30
LYRICS = [LyricLine(0.1, "a red kite", 2), LyricLine(0.6, "over green hills", 3),
          LyricLine(0.6, "and the sea", 4)]


class Flat:
    """Loudness stand-in: the same peak everywhere."""

    def peak(self, start: float, end: float) -> float:
        return 0.5


def documented_fields() -> list[str]:
    """The field names report's module docstring lists."""
    block = report.__doc__.split("Fields of report.json")[1]
    return re.findall(r"^    (\w+)\s", block, re.MULTILINE)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A one-second song, a video of it (30 frames, 64x64) and its plan, as a finished run."""
    folder = tmp_path_factory.mktemp("run")
    tone = (0.3 * np.sin(2 * np.pi * 330 * np.arange(SR) / SR)).astype(np.float32)
    song = demo.encode_audio(tone, SR, folder / "song.m4a")
    segments = schedule.beat_schedule([0.0, 0.5, 0.75, 1.0], LYRICS, FPS, 8, Flat())
    records = [segment_record(s, len(segments)) for s in segments]
    chunks = []
    for seg in segments:
        chunks.append(folder / f"chunk_{seg.index}.mp4")
        with FrameWriter(chunks[-1], 64, 64, FPS) as writer:
            writer.write(np.full((64, 64, 3), 40 * seg.index, np.uint8), seg.frames)
    out = video.join(chunks, song, folder / "output.mp4")
    return {"folder": folder, "song": song, "video": out, "records": records,
            "segments": segments}


def build(run: dict, **changes) -> dict:
    """A report of the fixture's run, with some inputs changed."""
    args = dict(song=run["song"], song_seconds=1.0, video=run["video"], fps=FPS,
                segments=run["records"], lyrics=LYRICS, lyrics_given=4,
                steps=sum(r["iterations"] for r in run["records"]), steps_this_run=6,
                render_seconds=2.5, wall_seconds=7.0, device="cpu", precision="fp32",
                outputs={"video": run["video"], "storyboard": run["folder"] / "s.png",
                         "subtitles": None, "run_dir": run["folder"],
                         "report": run["folder"] / "report.json"})
    return report.build(**{**args, **changes})


def test_every_documented_field_is_there_and_nothing_else(run):
    fields = documented_fields()
    assert len(fields) == 28 and "frame_difference" in fields and "outputs" in fields
    assert list(build(run)) == fields


def test_fields_agree_with_the_video_and_the_plan(run):
    got = build(run)
    frames, seconds = ffmpeg.count_frames(run["video"])
    assert got["video_frames"] == frames == 30 and got["video_seconds"] == seconds
    assert got["song_frames"] == 30 and got["frame_difference"] == 0
    assert got["segments"] == len(run["records"]) == 3
    assert got["steps"] == sum(s.iterations for s in run["segments"]) == 8
    assert got["steps_this_run"] == 6 and got["resumed"] is True
    assert got["steps_per_second"] == pytest.approx(6 / 2.5)
    assert got["realtime_factor"] == pytest.approx(7.0)
    assert got["lyric_lines_given"] == 4 and got["lyric_lines_used"] == 3
    assert got["device"] == "cpu" and got["precision"] == "fp32"
    assert got["peak_gpu_mb"] is None and got["peak_gpu_reserved_mb"] is None  # not CUDA
    assert got["song"] == str(run["song"].absolute())
    assert got["outputs"]["subtitles"] is None
    assert got["outputs"]["run_dir"] == str(run["folder"].absolute())
    whole = build(run, steps_this_run=8)
    assert whole["resumed"] is False
    # a resume that replayed a section's start renders all the steps, and is still a resume
    assert build(run, steps_this_run=8, resumed=True)["resumed"] is True


def test_frame_difference_counts_the_file(run):
    got = build(run, song_seconds=31 / FPS)  # a song one frame longer than the video
    assert got["song_frames"] == 31 and got["frame_difference"] == -1
    assert report.summary(got)[0].endswith("1 frame shorter than the song")


def test_peak_ram_is_measured_in_mib():
    import os

    statm = Path("/proc/self/statm")
    if not statm.is_file():
        pytest.skip("needs Linux's /proc to know the resident memory now")
    before = report.peak_ram_mb()
    resident = int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    extra = round(before) + 100  # enough to pass the old peak
    data = np.ones(extra * 2 ** 20 // 8)
    assert report.peak_ram_mb() == pytest.approx(resident + extra, abs=40)
    assert data[-1] == 1


def test_peak_gpu_memory_on_cuda(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 3 * 2 ** 20)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device: 5 * 2 ** 20)
    assert report.peak_gpu_mb("cuda:0") == (3.0, 5.0)
    assert report.peak_gpu_mb(torch.device("cpu")) == (None, None)


def test_peak_gpu_memory_off_cuda():
    assert report.peak_gpu_mb("cpu") == (None, None)


def test_lyric_lines_used_by_either_schedule():
    lyrics = LYRICS + [LyricLine(0.9, "last words", 5)]
    beats = schedule.beat_schedule([0.0, 0.5, 0.75, 1.0], lyrics, FPS, 8, Flat())
    assert report.lyric_lines_used(lyrics, beats) == 4
    assert report.lyric_lines_used(lyrics, [segment_record(s, 3) for s in beats]) == 4
    inter = schedule.interpolate_schedule(lyrics, 1.0, FPS, 8, Flat())
    assert report.lyric_lines_used(lyrics, inter) == 4
    audio_only = schedule.beat_schedule([0.0, 0.5, 1.0], [], FPS, 8, Flat())
    assert report.lyric_lines_used(lyrics, audio_only) == 0
    elsewhere = [LyricLine(0.1, "over green hills", 9)]  # a text that guides another stretch
    assert report.lyric_lines_used(elsewhere, beats) == 0


def test_write_is_atomic_json(run, tmp_path):
    got = build(run)
    path = report.write_report(tmp_path / "report.json", got)
    assert json.loads(path.read_text(encoding="utf-8")) == got
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_summary_lines(run):
    lines = report.summary(build(run))
    assert len(lines) == 5
    assert lines[0] == ("song 0:01 (1.00 s); video 30 frames at 30 fps (1.00 s), exactly the "
                        "song's length")
    assert lines[1] == "3 segments; lyric lines used 3 of 4"
    assert lines[2] == ("8 steps (6 this run) rendered in 0:02, 2.40 steps/s; wall 0:07, "
                        "7.00x the song's length")
    assert lines[3] == "peak RAM " + re.search(r"peak RAM (\S+ \w+)", lines[3])[1] + "; cpu, fp32"
    assert lines[4].startswith("wrote video ") and "subtitles" not in lines[4]
    assert build(run, lyrics=[], lyrics_given=0)["lyric_lines_given"] == 0
    assert report.summary(build(run, lyrics=[], lyrics_given=0))[1] == "3 segments; no lyrics"


def test_summary_agrees_with_the_progress_bars_last_state(run):
    """Read the bar's figures just before it closes: its final rate is then the summary's."""
    now = [1000.0]
    out = io.StringIO()
    bar = tqdm(total=8, initial=2, unit="it", file=out, mininterval=0)
    bar._time = lambda: now[0]
    bar.start_t = bar.last_print_t = now[0]
    for _ in range(6):
        now[0] += 0.37
        bar.update(1)
    figures = bar.format_dict
    bar.close()
    got = build(run, steps_this_run=figures["n"] - figures["initial"],
                render_seconds=figures["elapsed"])
    final = out.getvalue().split("\r")[-1]
    rate = re.search(r"([\d.]+)it/s", final)[1]
    assert f"{rate} steps/s" in report.summary(got)[2]
    assert "8/8" in final


def test_the_workers_are_grouped_from_the_journal_and_mixed_hardware_is_named():
    entries = [{"segment": 0}]  # an older run's line names no worker
    entries += [{"segment": k, "section": k // 2, "threads": 2, "precision": "bf16",
                 "node": "gpu-1", "hardware": "NVIDIA H100"} for k in range(1, 4)]
    entries += [{"segment": 4, "section": 2, "threads": 8, "precision": "fp32", "node": "cpu-1",
                 "hardware": "AMD EPYC", "chunk_sent": True}]
    entries[1]["chunk_sent"] = False  # written in place
    groups = report.workers(entries)
    assert groups == [
        {"node": "gpu-1", "hardware": "NVIDIA H100", "precision": "bf16", "threads": 2,
         "sections": [0, 1], "segments": 3, "chunks_sent": 0},
        {"node": "cpu-1", "hardware": "AMD EPYC", "precision": "fp32", "threads": 8,
         "sections": [2], "segments": 1, "chunks_sent": 1}]
    line = report.mixed_line({"workers": groups})
    assert line.startswith("mixed hardware: AMD EPYC fp32 (section 3); NVIDIA H100 bf16 "
                           "(sections 1, 2)") and "same hardware" in line
    assert report.mixed_line({"workers": groups[:1]}) is None
    # A node that did not see the run folder sent its chunks over the network: one line says so.
    assert report.sent_line({"workers": groups}).startswith(
        "1 chunk crossed the network from 1 node that does not see the run folder")
    assert report.sent_line({"workers": groups[:1]}) is None
    # journal lines from before the count: unknown, not "none sent"
    assert report.workers([{"segment": 0, "hardware": "AMD EPYC"}])[0]["chunks_sent"] is None
