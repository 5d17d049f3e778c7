"""The driver: one run per song, its folder written from the events the scheduler brings back."""

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..engine.renderer import Finished, Preview, Progress, RenderSpec, Work, work_cost
from ..errors import UserError
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
PROGRESS_LINE_SECONDS = 30.0  # off a terminal: a plain progress line at most this often


def say(quiet: bool, message: str) -> None:
    """A line for people on stderr (stdout stays for scripts), clear of the bar, unless quiet."""
    if not quiet:
        tqdm.write(message, file=sys.stderr)


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
                 burn_lyrics: bool = False, verbose: bool = False):
        self.index, self.plan, self.outputs = index, plan, outputs
        self.folder, self.manifest, self.spec, self.quiet = folder, manifest, spec, quiet
        self.burn_lyrics, self.verbose = burn_lyrics, verbose
        self.run_id = f"{time.strftime('%Y-%m-%dT%H:%M:%S')}.{os.getpid()}"  # this invocation
        self.render_started: float | None = None  # when this invocation began rendering
        self.left: set[int] = set()  # segments still to write down
        self.error: str | None = None
        self.started = time.monotonic()
        self.steps_this_run = 0
        self.peak_gpu_mb: float | None = None  # the workers' peak GPU memory
        self.cues = list(cues)
        self.board = storyboard.Storyboard(outputs.storyboard, manifest["segments"],
                                           title=plan.song.path.name, every=BOARD_SECONDS)
        done = folder.done()
        self.resumed = bool(done)  # it goes on from an earlier invocation's segments
        if done:
            self.board.update(saved_pictures(folder.path, manifest, done))
            self.board.write()

    @property
    def name(self) -> str:
        """The song, for log lines."""
        return str(self.plan.song.path)

    def log(self, message: str, detail: bool = False) -> None:
        """A line above the progress bar, unless -q; a detail only with -v."""
        say(self.quiet or (detail and not self.verbose), message)

    def spent(self) -> dict:
        """What this invocation has spent on the song so far (for the report's totals)."""
        now = time.monotonic()
        render = now - self.render_started if self.render_started is not None else 0.0
        return {"run": self.run_id, "wall": round(now - self.started, 3),
                "render": round(render, 3), "steps": self.steps_this_run}

    def finished_before(self) -> bool:
        """Whether an earlier invocation finished the song: every segment is written down and
        its video and report are there."""
        return (self.complete and self.outputs.video.is_file()
                and (self.folder.path / REPORT).is_file())

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
            self.log(f"step {event.iteration}: loss {event.loss:.4g}", detail=True)
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
            if event.chunk is not None or event.chunk_file:
                facts["chunk_sent"] = event.chunk is not None  # not written in place
            chunk = Path(event.chunk_file) if event.chunk_file else event.chunk
            self.folder.record(self.manifest, event.index, chunk, event.thumb, event.section,
                               state, self.spent(), facts)
            self.left.discard(event.index)
            self.log(segment_line(self.plan.segments[event.index], len(self.plan.segments)),
                     detail=True)
            for line in self.milestones(event.index):
                self.log(line)
            picture = storyboard.decode_thumbnail(event.thumb) if event.thumb else None
            if picture is not None:
                self.board.add(event.index, picture)
                self.board.refresh()
        elif state is not None:
            self.folder.save_state(event.section, state)

    def milestones(self, index: int) -> list[str]:
        """The lines a finished segment earns without -v: a lyric line it starts to follow, and
        the end of a section (when the song has several)."""
        from ..output.storyboard import clock

        segments, lines = self.plan.segments, []
        texts = lambda seg: [g.text for g in seg.goals if g.kind == "text"]  # noqa: E731
        before = set(texts(segments[index - 1])) if index else set()
        seg = segments[index]
        when = {line.text: line.time for line in self.plan.lyrics  # the line's time, not the cut's
                if line.time < seg.end}
        lines += [f"{clock(when.get(text, seg.start))} {text!r}" for text in texts(seg)
                  if text not in before]
        sections = self.plan.sections
        for number, (first, last) in enumerate(sections):
            if index == last and len(sections) > 1:
                lines.append(f"{self.plan.song.path.name}: section {number + 1} of "
                             f"{len(sections)} rendered")
        return lines

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
        with contextlib.suppress(OSError):  # housekeeping: the video is done either way
            self.folder.remove_leftovers()  # chunks of workers lost mid-segment, never kept
        self.log(f"done: {out.video}")
        return out.video

    def report(self, render_seconds: float, srt: Path | None) -> None:
        """report.json in the run folder, and its summary lines."""
        out = self.outputs
        fps = self.manifest.get("output_video_fps") or self.manifest["fps"]  # the file's rate
        ledger = self.folder.ledger() | {self.run_id: {**self.spent(), "render": render_seconds}}
        workers = report.workers(self.folder.entries())
        used = sorted({str(w["precision"]) for w in workers})  # 'auto' was decided per section
        precision = self.spec.precision if self.spec.precision != "auto" or not used else \
            "/".join(used)
        rep = report.build(
            song=self.plan.song.path, song_seconds=self.plan.song.duration, video=out.video,
            fps=fps, segments=self.manifest["segments"], lyrics=self.plan.lyrics,
            lyrics_given=self.plan.lyrics_given, steps=self.plan.steps,
            steps_this_run=self.steps_this_run, resumed=self.resumed,
            render_seconds=render_seconds,
            wall_seconds=time.monotonic() - self.started, device=self.spec.device,
            precision=precision,
            outputs={"video": out.video, "storyboard": out.storyboard, "subtitles": srt,
                     "run_dir": self.folder.path, "report": self.folder.path / REPORT},
            seed=self.manifest["seed"], totals=report.add_up(ledger.values()), workers=workers)
        if self.peak_gpu_mb is not None:
            rep["peak_gpu_mb"] = self.peak_gpu_mb  # measured where the steps ran
        song = self.plan.song
        rep["sync"] = sync.measure_video(out.video, song.samples, song.sr, fps)
        report.write_report(self.folder.path / REPORT, rep)
        for line in [*report.summary(rep), sync.sync_line(rep["sync"])]:
            say(self.quiet, line)

    def close(self) -> None:
        """Releases the run folder."""
        self.folder.unlock()


def work_steps(job: Job, work: Work) -> int:
    """Steps a piece of work renders, its section's warm-up included, and the next section's
    opening when the work ends its section with a cross-fade."""
    spec = job.spec
    warm = spec.warmup if work.first > 0 and work.state is None else 0
    fades = (spec.seam and work.section + 1 < len(spec.sections)
             and work.last == spec.sections[work.section][1])
    return work_cost(spec, work) + warm + (spec.warmup if fades else 0)


class ProgressLines:
    """Progress for a log file rather than a terminal: a plain line at most every
    PROGRESS_LINE_SECONDS (the bar redraws itself, which a file keeps every copy of)."""

    def __init__(self, total: int, initial: int, quiet: bool):
        self.total, self.n, self.quiet = total, initial, quiet
        self.start, self.last, self.first = time.monotonic(), time.monotonic(), initial

    def update(self, steps: int) -> None:
        """Counts steps (negative: steps a dead worker had done, to be rendered again)."""
        self.n += steps
        now = time.monotonic()
        if now - self.last >= PROGRESS_LINE_SECONDS and self.n > self.first:
            from ..output.storyboard import clock

            self.last = now
            rate = (self.n - self.first) / (now - self.start)
            say(self.quiet, f"rendering: {self.n}/{self.total} steps ({100 * self.n // max(1, self.total)}%)"
                f", {clock(now - self.start)} so far, about {clock((self.total - self.n) / rate)} "
                "left")


def progress(total: int, initial: int, quiet: bool):
    """One bar for the whole render on a terminal; plain lines at intervals elsewhere."""
    if quiet or not sys.stderr.isatty():
        return contextlib.nullcontext(ProgressLines(total, initial, quiet))
    return tqdm(total=total, initial=initial, unit="it", desc="rendering", dynamic_ncols=True,
                file=sys.stderr)


def render_jobs(jobs: list[Job], scheduler, quiet: bool, estimate=None) -> dict[int, str]:
    """Renders every job's remaining work and finishes each song as its last segment arrives:
    joined, its storyboard and report written on a thread of its own, so other songs' segments
    keep arriving meanwhile; `estimate(costs)`, when given, is the line said before the first
    step.

    Returns {job index: error line} for the songs that failed. When the workers stop for good
    (no worker left, the cluster's head lost), every song not finished gets that line."""
    from concurrent.futures import ThreadPoolExecutor

    from .workers import SchedulerError

    plans = {job.index: job for job in jobs}
    works, done_steps = [], 0
    for job in jobs:
        job_works, steps = job.works()
        works += job_works
        done_steps += steps
        done = len(job.folder.done())
        if job_works and done:
            job.log(f"{job.name}: resuming: {done} of {len(job.plan.segments)} segments are done")
    errors: dict[int, str] = {}
    total = done_steps + sum(work_cost(plans[w.job].spec, w) for w in works)
    started = time.monotonic()
    for job in jobs:
        job.render_started = started

    def finish(job: Job) -> None:
        try:
            job.finish(time.monotonic() - started)
        except UserError as err:
            errors[job.index] = str(err)

    specs = {w.job: (plans[w.job].spec, plans[w.job].plan.song.samples) for w in works}
    finishing = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish") as pool, \
            progress(total, done_steps, quiet) as bar:
        for job in jobs:
            if job.finished_before():
                job.log(f"{job.name}: already done: {job.outputs.video} (--overwrite renders it "
                        "again)")
            elif job.complete:
                finishing.append(pool.submit(finish, job))
        if estimate is not None and works:
            say(quiet, estimate([work_steps(plans[w.job], w) for w in works]))
        try:
            for event in scheduler.render(specs, works):
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
