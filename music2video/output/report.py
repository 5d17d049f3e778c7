"""The run report: report.json in the run folder and a few summary lines, at the end of a run.

Fields of report.json (all plain JSON values):
    song                path of the song
    song_seconds        its decoded length
    video               path of the final video
    video_frames        frames decoded from the video file (counted, not planned)
    video_seconds       the video stream's length, from the same count
    fps                 frames per second of the rendered video
    song_frames         round(song_seconds * fps): the frames a video as long as the song has
    frame_difference    video_frames - song_frames (0: exactly as long as the song)
    segments            segments in the plan
    lyric_lines_given   lines in the lyrics file (0 without lyrics)
    lyric_lines_used    of those, lines that guide at least one segment
    steps               optimisation steps of the whole plan
    steps_this_run      steps this process rendered (after a resume, those left, and those of a
                        section's start replayed from its last kept state, not written again)
    resumed             whether this process continued an earlier run (its run folder held
                        finished segments)
    render_seconds      time the rendering took (the progress bar's elapsed time)
    steps_per_second    steps_this_run / render_seconds (the bar's final rate)
    wall_seconds        time this process took, start to report (loading, rendering, joining)
    realtime_factor     wall_seconds / song_seconds (1: as fast as the song plays)
    peak_ram_mb         most resident memory this process held, MiB
    peak_gpu_mb         most CUDA memory torch allocated on the device, MiB (null off CUDA)
    peak_gpu_reserved_mb  most CUDA memory torch's caching allocator reserved, MiB (null off CUDA)
    device              the torch device rendered on, e.g. 'cuda:0' or 'cpu'
    precision           fp32, bf16 or fp16
    outputs             paths written: video, storyboard, subtitles (null without lyrics),
                        run_dir, report
    seed                the run's seed (drawn and kept in the manifest when -sd was not given)
    totals              over every invocation that worked on the run (a resumed run's earlier
                        ones too): invocations, wall_seconds, render_seconds, steps_rendered
    versions            music2video, torch and Python that wrote this report
    workers             who rendered the segments, one item per node, hardware, precision and
                        CPU threads: its sections, segment count, and chunks_sent, how many of
                        its chunks crossed the network as bytes because it did not see the run
                        folder (None where its journal lines predate that count) (from the run's
                        journal, so a resumed run lists the earlier run's workers too; [] for
                        older runs)
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

from ..ffmpeg import count_frames
from ..files import write_json
from .storyboard import clock

MIB = 2 ** 20


def peak_ram_mb() -> float:
    """Most resident memory this process has held, MiB (ru_maxrss is KiB on Linux, bytes on
    macOS). Children are left out: a child's figure starts from its parent's at fork, so an
    ffmpeg started by a 3 GB process would read as 3 GB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


def peak_gpu_mb(device) -> tuple[float | None, float | None]:
    """Peak CUDA memory torch allocated and reserved on the device, MiB; (None, None) off CUDA."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None, None
    return (torch.cuda.max_memory_allocated(device) / MIB,
            torch.cuda.max_memory_reserved(device) / MIB)


def _field(item, name: str):
    """An attribute of a dataclass or a key of a manifest record."""
    return item[name] if isinstance(item, dict) else getattr(item, name)


def lyric_lines_used(lyrics, segments) -> int:
    """Lyric lines (with .time, .text) that guide a segment: one whose span holds the line's time
    and whose goals hold its text. Segments are manifest records or schedule.Segments."""
    used = 0
    for line in lyrics:
        for seg in segments:
            inside = _field(seg, "start") <= line.time < _field(seg, "end")
            texts = {_field(g, "text") for g in _field(seg, "goals") if _field(g, "kind") == "text"}
            if inside and line.text in texts:
                used += 1
                break
    return used


def _path(path) -> str | None:
    """A path as the report stores it (absolute), or None."""
    return str(Path(path).absolute()) if path is not None else None


def build(*, song: Path, song_seconds: float, video: Path, fps: float, segments: list,
          lyrics: list, lyrics_given: int, steps: int, steps_this_run: int,
          render_seconds: float, wall_seconds: float, device: str, precision: str,
          outputs: dict[str, Path | None], seed: int | None = None,
          totals: dict | None = None, workers: list | None = None,
          resumed: bool | None = None) -> dict:
    """The report of a finished run; the video's frames are counted from the file itself.

    `segments` is the plan (manifest records or schedule.Segments); `lyrics` the lines kept for
    the song and `lyrics_given` how many the file held; `outputs` maps video, storyboard,
    subtitles, run_dir and report to their paths (None for one not written); `workers` is
    workers() of the run's journal; `resumed` whether the run folder held finished segments
    (None: whether fewer steps than the plan's were rendered)."""
    frames, seconds = count_frames(video)
    song_frames = round(song_seconds * fps)
    gpu, gpu_reserved = peak_gpu_mb(device)
    return {
        "song": _path(song), "song_seconds": song_seconds,
        "video": _path(video), "video_frames": frames, "video_seconds": seconds, "fps": fps,
        "song_frames": song_frames, "frame_difference": frames - song_frames,
        "segments": len(segments),
        "lyric_lines_given": lyrics_given, "lyric_lines_used": lyric_lines_used(lyrics, segments),
        "steps": steps, "steps_this_run": steps_this_run,
        "resumed": steps_this_run < steps if resumed is None else resumed,
        "render_seconds": render_seconds,
        "steps_per_second": steps_this_run / render_seconds if render_seconds > 0 else None,
        "wall_seconds": wall_seconds,
        "realtime_factor": wall_seconds / song_seconds if song_seconds > 0 else None,
        "peak_ram_mb": peak_ram_mb(),
        "peak_gpu_mb": gpu, "peak_gpu_reserved_mb": gpu_reserved,
        "device": str(device), "precision": precision,
        "outputs": {key: _path(path) for key, path in outputs.items()},
        "seed": seed, "totals": totals, "versions": versions(),
        "workers": list(workers or []),
    }


def workers(entries: list[dict]) -> list[dict]:
    """Who rendered a run's segments, from its journal entries: one item per node, hardware,
    precision and threads, with the sections it rendered, its segment count and how many of its
    chunks it sent as bytes."""
    groups: dict[tuple, dict] = {}
    for entry in entries:
        if "hardware" not in entry:
            continue  # written by an older version
        key = (entry.get("node"), entry["hardware"], entry.get("precision"), entry.get("threads"))
        group = groups.setdefault(key, {"node": key[0], "hardware": key[1], "precision": key[2],
                                        "threads": key[3], "sections": set(), "segments": 0,
                                        "chunks_sent": None})
        group["sections"].add(entry.get("section"))
        group["segments"] += 1
        if "chunk_sent" in entry:  # older journals do not say
            group["chunks_sent"] = (group["chunks_sent"] or 0) + bool(entry["chunk_sent"])
    return [{**g, "sections": sorted(s for s in g["sections"] if s is not None)}
            for g in groups.values()]


def mixed_line(report: dict) -> str | None:
    """A summary line naming the hardware when the sections rendered on more than one kind
    (None otherwise): the same frames hold only on the same hardware."""
    kinds: dict[str, set] = {}
    for group in report.get("workers", []):
        kinds.setdefault(f"{group['hardware']} {group['precision']}", set()).update(
            group["sections"])
    if len(kinds) < 2:
        return None
    named = "; ".join(f"{kind} (section{'s' if len(sections) > 1 else ''} "
                      f"{', '.join(str(s + 1) for s in sorted(sections))})"
                      for kind, sections in sorted(kinds.items()))
    return (f"mixed hardware: {named}; another run gives the same frames only where each "
            "section renders on the same hardware")


def sent_line(report: dict) -> str | None:
    """A summary line when cluster nodes sent their chunks as bytes, not seeing the run folder
    (None otherwise): shared storage there would spare the network and the driver's disk."""
    groups = [g for g in report.get("workers", []) if g["node"] and g.get("chunks_sent")]
    if not groups:
        return None
    nodes, sent = {g["node"] for g in groups}, sum(g["chunks_sent"] for g in groups)
    many = len(nodes) != 1
    return (f"{sent} chunk{'s' if sent != 1 else ''} crossed the network from {len(nodes)} "
            f"node{'s that do' if many else ' that does'} not see the run folder; storage "
            "shared at its path lets workers write them in place")


def add_up(spent) -> dict:
    """The run's cost over its invocations, from each one's {wall, render, steps}."""
    spent = list(spent)
    return {"invocations": len(spent),
            "wall_seconds": round(sum(s["wall"] for s in spent), 3),
            "render_seconds": round(sum(s["render"] for s in spent), 3),
            "steps_rendered": int(sum(s["steps"] for s in spent))}


def versions() -> dict:
    """The versions that made a video: this tool, torch and Python."""
    import platform

    import torch

    from .. import __version__

    return {"music2video": __version__, "torch": torch.__version__,
            "python": platform.python_version()}


def write_report(path: Path, report: dict) -> Path:
    """Writes report.json atomically."""
    write_json(Path(path), report)
    return Path(path)


def _mb(value: float | None) -> str:
    """MiB as the summary shows them."""
    return f"{value / 1024:.1f} GiB" if value >= 1024 else f"{value:.0f} MiB"


def summary(report: dict) -> list[str]:
    """A few lines for stderr that say what the run made and what it cost."""
    r = report
    off = r["frame_difference"]
    length = "exactly the song's length" if off == 0 else (
        f"{abs(off)} frame{'s' if abs(off) != 1 else ''} {'longer' if off > 0 else 'shorter'} "
        "than the song")
    lyrics = (f"; lyric lines used {r['lyric_lines_used']} of {r['lyric_lines_given']}"
              if r["lyric_lines_given"] else "; no lyrics")
    rate = f"{r['steps_per_second']:.2f} steps/s" if r["steps_per_second"] else "no steps"
    this_run = f" ({r['steps_this_run']} this run)" if r["resumed"] else ""
    memory = f"peak RAM {_mb(r['peak_ram_mb'])}"
    if r["peak_gpu_mb"] is not None:
        memory += f", peak GPU {_mb(r['peak_gpu_mb'])}"
    written = ", ".join(f"{k} {v}" for k, v in r["outputs"].items() if v)
    total = r.get("totals") or {}
    if total.get("invocations", 1) > 1:
        rate += (f"; over {total['invocations']} invocations {total['steps_rendered']} steps in "
                 f"{clock(total['render_seconds'])}, wall {clock(total['wall_seconds'])}")
    return [
        f"song {clock(r['song_seconds'])} ({r['song_seconds']:.2f} s); video {r['video_frames']} "
        f"frames at {r['fps']:g} fps ({r['video_seconds']:.2f} s), {length}",
        f"{r['segments']} segments{lyrics}",
        f"{r['steps']} steps{this_run} rendered in {clock(r['render_seconds'])}, {rate}; wall "
        f"{clock(r['wall_seconds'])}, {r['realtime_factor']:.2f}x the song's length",
        f"{memory}; {r['device']}, {r['precision']}",
        *([mixed_line(r)] if mixed_line(r) else []),
        *([sent_line(r)] if sent_line(r) else []),
        f"wrote {written}",
    ]
