"""The driver: one run per song, its folder written from the events the scheduler brings back."""

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..engine.renderer import Finished, Preview, Progress, RenderSpec, Work, work_cost
from ..files import writing
from ..output import report, storyboard, subtitles, sync
from ..song.plan import Plan
from .folder import REPORT, RunFolder, describe_problems, saved_pictures
from .workers import Failed


@dataclass(frozen=True)
class Outputs:
    """Where one song's run writes."""

    video: Path  # the finished mp4
    preview: Path  # the -se preview picture
    run_dir: Path  # chunks, states, manifest

    @property
    def storyboard(self) -> Path:
        """The contact sheet beside the video."""
        return storyboard.storyboard_path(self.video)

    @property
    def srt(self) -> Path:
        """The lyrics as subtitles beside the video."""
        return subtitles.srt_path(self.video)

    def written(self, with_subtitles: bool = True) -> dict[str, Path]:
        """The final files the run writes beside its folder, by what they are."""
        files = {"video": self.video, "preview picture": self.preview, "storyboard": self.storyboard}
        return {**files, "subtitles": self.srt} if with_subtitles else files


NAMED_GOALS = 3  # goals a segment's log line names; the rest are counted
BOARD_SECONDS = 2.0  # the storyboard is rewritten at most this often while segments finish


def say(quiet: bool, message: str, file=None) -> None:
    """A log line (stdout, or `file`) that keeps clear of the progress bar, unless quiet."""
    if not quiet:
        tqdm.write(message, file=file)


def segment_line(seg, count: int) -> str:
    """One line about a segment for the log: time span, steps, frames and goal."""
    names = [f"lyric {g.text!r}" if g.kind == "text" else "audio" for g in seg.goals]
    if len(names) > NAMED_GOALS:
        names = names[:NAMED_GOALS] + [f"{len(names) - NAMED_GOALS} more"]
    goals = "; ".join(names)
    return (f"[{seg.index + 1}/{count}] {storyboard.clock(seg.start, 2)}-{storyboard.clock(seg.end, 2)} "
            f"{seg.iterations} it, {seg.frames} frames: {goals}")


def save_preview(frame: np.ndarray, path: Path) -> None:
    """Writes a picture (H, W, 3) uint8 as a PNG, atomically (the seed's -o preview)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with writing(path) as part:
        Image.fromarray(frame).save(part, format="PNG")


def digest(path: Path | None) -> str | None:
    """SHA-256 of an optional file."""
    from ..models.download import sha256sum

    return sha256sum(path) if path else None


class Job:
    """One song's run: its plan, its locked folder, and what is left to render."""

    def __init__(self, index: int, plan: Plan, outputs: Outputs, folder: RunFolder,
                 manifest: dict, spec: RenderSpec, quiet: bool, cues: list = (),
                 burn_lyrics: bool = False):
        self.index, self.plan, self.outputs = index, plan, outputs
        self.folder, self.manifest, self.spec, self.quiet = folder, manifest, spec, quiet
        self.burn_lyrics = burn_lyrics
        self.left: set[int] = set()  # segments still to write down
        self.error: str | None = None
        self.started = time.monotonic()
        self.steps_this_run = 0
        self.peak_gpu_mb: float | None = None  # the workers' peak GPU memory
        self.cues = list(cues)
        self.board = storyboard.Storyboard(outputs.storyboard, manifest["segments"],
                                           title=plan.song.path.name, every=BOARD_SECONDS)
        done = folder.done()
        if done:
            self.board.update(saved_pictures(folder.path, manifest, done))
            self.board.write()

    @property
    def name(self) -> str:
        """The song, for log lines."""
        return str(self.plan.song.path)

    def log(self, message: str) -> None:
        """A line above the progress bar, unless -q."""
        say(self.quiet, message)

    def works(self) -> tuple[list[Work], int]:
        """What is left to render (resuming where the folder stopped, re-rendering chunks that
        are lost or damaged), and the steps already done.

        Every finished chunk is decoded and its frames counted against the manifest. A bad one
        is rendered again by replaying its section from the start (a segment needs the state
        after the one before it, and only the section's last state is kept); the chunks that
        are whole are not rewritten."""
        done = self.folder.done()
        records, works = self.manifest["segments"], []
        setups = self.folder.setups()
        states = [self.folder.load_state(section) for section in range(len(self.plan.sections))]
        unjournaled = {state["segment"] for state in states if state} - done
        bad = self.folder.chunk_problems([records[k] for k in sorted(done | unjournaled)
                                          if 0 <= k < len(records)])
        for section, (first, last) in enumerate(self.plan.sections):
            state = states[section]
            reached = state["segment"] if state else first - 1
            if reached in unjournaled and reached not in bad:
                self.folder.journal(reached)  # stopped between the state and the journal
                done.add(reached)
            missing = {k for k in range(first, last + 1) if k in done and k in bad}
            needs = {k for k in range(first, last + 1) if k not in done} | missing
            tail = {k for k in needs if k > reached}
            head = needs - tail
            setup = setups.get(section, {})  # what the section began with, kept
            fixed = {"threads": setup.get("threads"), "precision": setup.get("precision")}
            if tail:
                works.append(Work(self.index, section, reached + 1, max(tail), state,
                                  frozenset(tail), **fixed))
            if head:
                works.append(Work(self.index, section, first, max(head), None, frozenset(head),
                                  repair=True, **fixed))
            self.left |= needs
        lost = {k: why for k, why in bad.items() if k in done}
        if lost:
            self.log(f"{self.name}: {len(lost)} finished chunk(s) are missing or damaged "
                     f"({describe_problems(lost, records)}); rendering them again")
        steps_done = sum(s.iterations for s in self.plan.segments if s.index not in self.left)
        return works, steps_done

    def handle(self, event) -> None:
        """Writes down one event of this song's render."""
        if isinstance(event, Progress):
            self.steps_this_run += event.steps
        elif isinstance(event, Finished):
            self._finished(event)
        elif isinstance(event, Preview):
            save_preview(event.frame, self.outputs.preview)
            self.log(f"step {event.iteration}: loss {event.loss:.4g}")
        elif isinstance(event, Failed):
            self.error = event.message

    def _finished(self, event: Finished) -> None:
        """A finished segment: its files, its section's state, the journal."""
        state = None if event.repair else event.state
        if event.peak_gpu_mb is not None:
            self.peak_gpu_mb = max(self.peak_gpu_mb or 0.0, event.peak_gpu_mb)
        if event.wanted:
            facts = {"section": event.section, "threads": event.threads,
                     "precision": event.precision, **(event.worker or {})}
            self.folder.record(self.manifest, event.index, event.chunk, event.thumb,
                               event.section, state, facts)
            self.left.discard(event.index)
            self.log(segment_line(self.plan.segments[event.index], len(self.plan.segments)))
            picture = storyboard.decode_thumbnail(event.thumb) if event.thumb else None
            if picture is not None:
                self.board.add(event.index, picture)
                self.board.refresh()
        elif state is not None:
            self.folder.save_state(event.section, state)

    @property
    def complete(self) -> bool:
        """Every segment is written down."""
        return not self.left and self.error is None

    def finish(self, render_seconds: float) -> Path:
        """Joins the chunks with the song (and the lyrics as subtitles) into the video; writes
        the storyboard and the run report."""
        from ..output.video import join

        self.folder.check_present()
        fps, out = self.manifest["fps"], self.outputs
        srt = subtitles.write_srt(out.srt, self.cues) if self.cues else None
        join(self.folder.finished_chunks(self.manifest), self.plan.song.path, out.video,
             self.manifest.get("output_video_fps", 0),
             video_seconds=self.plan.segments[-1].frame_end / fps,
             subtitles=None if self.burn_lyrics else srt)
        self.board.write()
        self.report(render_seconds, srt)
        self.log(f"done: {out.video}")
        return out.video

    def report(self, render_seconds: float, srt: Path | None) -> None:
        """report.json in the run folder, and its summary lines."""
        out = self.outputs
        fps = self.manifest.get("output_video_fps") or self.manifest["fps"]  # the file's rate
        workers = report.workers(self.folder.entries())
        used = sorted({str(w["precision"]) for w in workers})  # 'auto' was decided per section
        precision = self.spec.precision if self.spec.precision != "auto" or not used else \
            "/".join(used)
        rep = report.build(
            song=self.plan.song.path, song_seconds=self.plan.song.duration, video=out.video,
            fps=fps, segments=self.manifest["segments"], lyrics=self.plan.lyrics,
            lyrics_given=self.plan.lyrics_given, steps=self.plan.steps,
            steps_this_run=self.steps_this_run, render_seconds=render_seconds,
            wall_seconds=time.monotonic() - self.started, device=self.spec.device,
            precision=precision,
            outputs={"video": out.video, "storyboard": out.storyboard, "subtitles": srt,
                     "run_dir": self.folder.path, "report": self.folder.path / REPORT},
            workers=workers)
        if self.peak_gpu_mb is not None:
            rep["peak_gpu_mb"] = self.peak_gpu_mb  # measured where the steps ran
        song = self.plan.song
        rep["sync"] = sync.measure_video(out.video, song.samples, song.sr, fps)
        report.write_report(self.folder.path / REPORT, rep)
        for line in [*report.summary(rep), sync.sync_line(rep["sync"])]:
            say(self.quiet, line, sys.stderr)

    def close(self) -> None:
        """Releases the run folder."""
        self.folder.unlock()


def resume_line(job: Job) -> str | None:
    """'resuming at segment k of n (d done)' for a job that has finished segments, k the first
    segment still to render; None for a job starting afresh."""
    count = len(job.plan.segments)
    if not job.left or len(job.left) == count:
        return None
    return (f"{job.name}: resuming at segment {min(job.left) + 1} of {count} "
            f"({count - len(job.left)} done)")


def render_jobs(jobs: list[Job], scheduler, quiet: bool) -> dict[int, str]:
    """Renders every job's remaining work and finishes each song as its last segment arrives:
    joined, its storyboard and report written on a thread of its own, so other songs' segments
    keep arriving meanwhile.

    Returns {job index: error line} for the songs that failed. When the workers stop for good
    (no worker left, the cluster's head lost), every song not finished gets that line."""
    from concurrent.futures import ThreadPoolExecutor

    from ..ffmpeg import VideoError
    from ..files import RunError as FolderError
    from .workers import SchedulerError

    plans = {job.index: job for job in jobs}
    works, done_steps = [], 0
    for job in jobs:
        job_works, steps = job.works()
        works += job_works
        done_steps += steps
        line = resume_line(job)
        if line:
            job.log(line)
    errors: dict[int, str] = {}
    total = done_steps + sum(work_cost(plans[w.job].spec, w) for w in works)
    started = time.monotonic()

    def finish(job: Job) -> None:
        try:
            job.finish(time.monotonic() - started)
        except (FolderError, VideoError) as err:
            errors[job.index] = str(err)

    specs = {w.job: (plans[w.job].spec, plans[w.job].plan.song.samples) for w in works}
    finishing = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish") as pool, \
            tqdm(total=total, initial=done_steps, unit="it", desc="rendering", disable=quiet,
                 dynamic_ncols=True) as bar:
        finishing += [pool.submit(finish, job) for job in jobs if job.complete]
        try:
            for event in scheduler.run(specs, works):
                job = plans[event.job]
                job.handle(event)
                if isinstance(event, Progress):
                    bar.update(event.steps)  # below 0: a lost worker's steps, rendered again
                elif isinstance(event, Failed):
                    errors[job.index] = event.message
                elif job.complete and isinstance(event, Finished) and event.wanted:
                    finishing.append(pool.submit(finish, job))
        except SchedulerError as err:
            for job in jobs:
                if not job.complete and job.index not in errors:
                    errors[job.index] = str(err)
    for future in finishing:
        future.result()  # a bug in finishing a song is a traceback, as before
    return errors
