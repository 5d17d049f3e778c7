"""The section renderer: models, a stretch of segments and its start in; finished segments out.

A section renders like a whole song: the latent, the optimiser and the continuity picture carry
over from segment to segment. It knows nothing of run folders or Ray: it yields plain-data
events (progress, previews, finished segments with their chunk and the state after them) and
whoever drives it writes them down. A chunk is encoded straight into the run folder when this
process sees it (a Drop), under a temporary name the driver renames; else it travels as bytes."""

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..ffmpeg import VideoError
from ..files import DISK_ERRORS, disk_error, folder_gone, handed_chunk, part_path
from ..models.networks import embed_audio
from ..options import ReactSettings, parse_prompt, split_prompts
from ..output.report import peak_gpu_mb
from ..output.storyboard import encode_thumbnail, thumbnail
from ..output.subtitles import Burner
from ..output.video import FrameWriter
from ..song.segments import Segment, audio_window, frame_sources
from .guidance import Target, noise_target
from .modelset import (
    Models,
    WeightChoice,
    check_fingerprints,
    first_latent,
    load_models,
    resolve_weights,
)
from .motion import Camera, Zoom, react_track
from .optimise import Optimiser, autocast, to_frame
from .precision import decide, machine_cores

PROGRESS_SECONDS = 0.25  # how often progress is reported while a segment renders
TIMED_STEPS = 2  # steps timed for the estimate before a render, after one untimed step
# A finished segment carries the state to go on from only at the end of its work, or once this
# long has passed since the last one did: a worker's death costs at most this much rendering,
# and the states (1.5 MiB at 256x256, 6 MiB at 512x512) no longer cross the wire per segment.
STATE_SECONDS = 30.0


class RenderError(UserError, RuntimeError):
    """Rendering cannot go on as asked; str() says why and what to change."""


def out_of_memory(err: BaseException) -> bool:
    """Whether an error is a failed allocation: torch's OutOfMemoryError, MemoryError, or the
    CPU allocator's RuntimeError ("DefaultCPUAllocator: can't allocate memory")."""
    text = str(err)
    return isinstance(err, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(err, RuntimeError)
        and ("DefaultCPUAllocator" in text or "can't allocate memory" in text))


@dataclass(frozen=True)
class Drop:
    """Where a worker that shares the driver's file system leaves its finished chunks: the run
    folder (absolute), and a file in it holding a token only that folder has, so a folder of the
    same path on another machine is never taken for it."""

    folder: str
    proof: str  # the token file's name in `folder`
    token: str

    def reachable(self) -> bool:
        """Whether this process sees the driver's folder (else chunks travel as bytes)."""
        try:
            return (Path(self.folder) / self.proof).read_text(encoding="utf-8") == self.token
        except (OSError, UnicodeDecodeError):
            return False

    def claim(self, index: int) -> Path | None:
        """A name to encode segment `index`'s chunk under (FrameWriter writes it as its
        temporary name, which the driver renames), its file made here first; None when this
        process cannot make files in the folder (read-only, another user's): send bytes."""
        path = handed_chunk(Path(self.folder), index)
        try:
            os.close(os.open(part_path(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL
                             | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
        except OSError:
            return None
        return path


@dataclass(frozen=True)
class RenderSpec:
    """Everything needed to render any section of one song: plain data, picklable for workers."""

    weights: WeightChoice  # resolved on the worker, in its own checkpoints folder
    device: str  # 'cpu', 'cuda' (the GPU the worker was given), 'cuda:1', 'mps'
    size: tuple[int, int]  # width, height in pixels, whole VQGAN cells
    segments: tuple[Segment, ...]  # the song's whole plan
    seed: int
    sr: int  # sample rate of the song's samples
    fps: float
    precision: str  # 'fp32', 'bf16', 'fp16', or 'auto': decided where each section renders
    threads: int  # CPU threads per section (results depend on it); 0: the worker's cores / sections
    num_cuts: int = 32
    cut_method: str = "latest"
    cut_power: float = 1.0
    augments: tuple[str, ...] = ("Af", "Pe", "Ji", "Er")
    optimiser: str = "Adam"
    learning_rate: float = 0.1
    init_weight: float = 0.0
    init_image: torch.Tensor | None = None  # (1, 3, H, W) in [0, 1], the -ii picture
    init_noise: str | None = None
    prompts: str | None = None  # -p, '^'-separated phrases for -cpe
    change_prompt_every: int = 0
    image_prompts: tuple = ()  # ((1, 3, H, W) picture, weight, stop) per -ip item
    noise_prompts: tuple = ()  # (seed, weight) per -nps item
    zoom: Zoom | None = None
    save_every: int = 0  # previews every N steps (0: none)
    warmup: int = 50  # unrendered steps that open every section after the first
    compile: str | None = None
    deterministic: bool = False
    captions: tuple = ()  # subtitles.Cue of the lyrics to burn into the frames (--burn_lyrics)
    react: ReactSettings | None = None  # camera motion on the song's onsets (--react)
    start_iteration: tuple[int, ...] = field(default=())  # global step at each segment's start
    sections: tuple[tuple[int, int], ...] = ()  # (first, last) segment of each section
    seam: float = 0.0  # seconds a section's end cross-fades into the next one's opening (0: a cut)
    fingerprints: tuple = ()  # modelset.Fingerprint of each weight file, as the driver has it
    drop: Drop | None = None  # the run folder, for workers that see it (None: chunks as bytes)

    def __post_init__(self):
        if not self.start_iteration:
            starts = np.cumsum([0] + [s.iterations for s in self.segments[:-1]]).tolist()
            object.__setattr__(self, "start_iteration", tuple(int(s) for s in starts))


@dataclass(frozen=True)
class Work:
    """A stretch of one section to render: segments first..last, from a state (None: its start)."""

    job: int  # which song of the batch
    section: int
    first: int
    last: int
    state: dict | None = None  # the state after segment first - 1
    write: frozenset = frozenset()  # segments to write down (chunk, thumbnail, journal)
    repair: bool = False  # re-rendering lost chunks: the section's saved state is not replaced
    threads: int | None = None  # the section's CPU threads, once fixed (None: chosen here)
    precision: str | None = None  # the section's precision, once fixed (None: from the spec)

    def wants(self, index: int) -> bool:
        """Whether segment `index`'s chunk is to be written."""
        return index in self.write


@dataclass
class Progress:
    """Steps done since the last report."""

    job: int
    steps: int


@dataclass
class Preview:
    """The picture and loss at a -se step."""

    job: int
    iteration: int
    frame: np.ndarray  # (H, W, 3) uint8
    loss: float


@dataclass
class Finished:
    """A finished segment: its chunk, its thumbnail and the state to continue from."""

    job: int
    section: int
    index: int
    chunk: bytes | None  # the H.264 mp4 (None: no frames, not asked for, or in chunk_file)
    thumb: bytes | None  # small PNG of its last picture, for the storyboard (when wanted)
    state: dict | None  # optimiser state, last picture, global step, segment index (see
    #                     STATE_SECONDS: None on most segments)
    wanted: bool  # the segment is to be written down (else it was only replayed)
    repair: bool = False  # re-rendered for a lost chunk: its state is not the section's
    peak_gpu_mb: float | None = None  # the worker's peak GPU memory so far (CUDA only)
    threads: int = 0  # the CPU threads it rendered with
    precision: str = ""  # the precision it rendered in
    worker: dict | None = None  # who rendered it: node and hardware (filled in by the scheduler)
    chunk_file: str | None = None  # the chunk, encoded into the run folder under a temporary name


def work_cost(spec: RenderSpec, work: Work) -> int:
    """Steps a piece of work takes (for longest-first scheduling and the bar)."""
    return sum(s.iterations for s in spec.segments[work.first:work.last + 1])


def section_seed(seed: int, section: int) -> int:
    """The seed of a section's warm-up: from the run seed and the section's index."""
    return int(np.random.SeedSequence([seed, section]).generate_state(1)[0])


def thumbnail_png(image: torch.Tensor) -> bytes:
    """A small PNG of a picture (1, 3, H, W) in [0, 1], as the storyboard shows it."""
    return encode_thumbnail(thumbnail(to_frame(image).numpy()))


def on_cpu(value):
    """A state (nested dicts and lists of tensors) with every tensor on the CPU: what a driver
    without the worker's GPU can read."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: on_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_cpu(item) for item in value)
    return value


def scratch_folder() -> Path:
    """This process's folder for chunks being encoded; folders of processes that died (killed
    workers) are removed on the way."""
    import shutil

    root = Path(tempfile.gettempdir()) / "m2v-chunks"
    root.mkdir(exist_ok=True)
    for folder in root.iterdir():
        if folder.name.isdigit() and not alive(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)
    mine = root / str(os.getpid())
    mine.mkdir(exist_ok=True)
    return mine


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (a no-op off CUDA), so a timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alive(pid: int) -> bool:
    """Whether a process with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_for(spec: RenderSpec, quiet: bool = True) -> Models:
    """Loads the spec's models on this machine (its own checkpoints folder) and device, after
    checking that each weight file is the driver's (when the spec lists their fingerprints)."""
    device = torch.device(spec.device)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = spec.deterministic
        torch.backends.cudnn.benchmark = not spec.deterministic
    paths = resolve_weights(spec.weights, quiet=quiet)
    check_fingerprints(paths, spec.fingerprints)
    return load_models(paths, device, spec.num_cuts, spec.cut_method, spec.cut_power,
                       spec.augments)


@dataclass
class Fade:
    """The cross-fade that ends a section: frames start..end-1 blend into the next section's
    opening picture, so the seam moves no more than a frame inside the fade does."""

    start: int  # first frame of the fade
    end: int  # one past the section's last frame
    picture: torch.Tensor | None = None  # (1, 3, H, W) the next section's opening, once made

    def weight(self, frame: int) -> float:
        """How far frame `frame` has gone towards the next section's picture (0 to 1)."""
        return (frame - self.start + 1) / (self.end - self.start + 1)


def faded(image: torch.Tensor, first: int, count: int, fade: Fade | None) -> Iterator:
    """(uint8 frame (H, W, 3), its index, repeats) for frames first .. first + count - 1 of a
    picture: held as one frame before the fade, one frame each inside it."""
    plain = count if fade is None else max(0, min(count, fade.start - first))
    if plain:
        yield to_frame(image, cpu=False), first, plain
    for frame in range(first + plain, first + count):
        yield to_frame(image.lerp(fade.picture, fade.weight(frame)), cpu=False), frame, 1


class Renderer:
    """Renders sections of one song with loaded models; `render(work)` yields its events."""

    def __init__(self, spec: RenderSpec, samples: np.ndarray, models: Models):
        self.spec, self.samples, self.models = spec, samples, models
        self.width, self.height = spec.size
        self.duration = len(samples) / spec.sr
        self.text_cache: dict = {}
        self.start_latent = first_latent(models.vqgan, spec.size, spec.seed, models.device,
                                         spec.init_image, spec.init_noise)
        torch.manual_seed(spec.seed)  # image prompts' cut-outs are random too
        self.style = self._style_targets()
        self.optimiser: Optimiser | None = None
        self.scratch = scratch_folder()
        self.burner = (Burner(list(spec.captions), spec.fps, self.width, self.height)
                       if spec.captions else None)
        self.camera = None
        if spec.react is not None and spec.react.active:
            track = react_track(samples, spec.sr, spec.fps, spec.segments[-1].frame_end,
                                spec.react)
            self.camera = Camera(track, self.width, self.height)

    def _text(self, text: str, weight=1.0, stop=float("-inf")) -> Target:
        """CLIP target of a text, computed once per distinct text."""
        key = (text, weight, stop)
        if key not in self.text_cache:
            self.text_cache[key] = self.models.perceptor.text_target(text, weight, stop)
        return self.text_cache[key]

    def _style_targets(self) -> list[list[Target]]:
        """Style goals for every segment: -p prompt groups (one per '^' phrase), -ip, -nps."""
        s, perceptor = self.spec, self.models.perceptor
        fixed = [perceptor.image_target(image, weight, stop)
                 for image, weight, stop in s.image_prompts]
        fixed += [noise_target(seed, weight, self.models.embed_dim, self.models.device)
                  for seed, weight in s.noise_prompts]
        phrases = (s.prompts or "").split("^")
        groups = [[self._text(*parse_prompt(p)) for p in split_prompts(ph)] for ph in phrases]
        return [group + fixed for group in groups]

    def _style_at(self, iteration: int) -> list:
        """The style goals at a global step (-cpe cycles the '^' phrases)."""
        every = self.spec.change_prompt_every
        group = (iteration // every) % len(self.style) if every else 0
        return [(t, t.weight) for t in self.style[group]]

    def _segment_targets(self, seg: Segment) -> list:
        """(target, goal) pairs of a segment: CLIP text or Wav2CLIP audio embeddings."""
        pairs = []
        for goal in seg.goals:
            if goal.kind == "text":
                pairs.append((self._text(goal.text), goal))
                continue
            start, end = audio_window(goal, self.duration)
            sr = self.spec.sr
            clip = self.samples[int(start * sr):max(int(end * sr), int(start * sr) + 1)]
            pairs.append((Target(embed_audio(self.models.wav2clip, clip)), goal))
        return pairs

    def _optimiser(self, z: torch.Tensor, precision: str) -> Optimiser:
        """An optimiser over z (the models are prepared, e.g. compiled, only once)."""
        s, m = self.spec, self.models
        if self.optimiser is None or self.optimiser.precision != precision:
            self.optimiser = Optimiser(m.vqgan, m.perceptor, z.to(m.device), s.optimiser,
                                       s.learning_rate, s.init_weight, precision,
                                       compile_mode=s.compile if self.optimiser is None else None)
        else:
            self.optimiser.restart(z.to(m.device))
        return self.optimiser

    def setup(self, work: Work) -> tuple[int, str]:
        """The CPU threads and precision a piece of work renders with: the section's own once
        fixed, else the spec's, else this worker's (its cores / the song's sections; --precision
        auto decided on this machine)."""
        s = self.spec
        threads = work.threads or s.threads or max(1, machine_cores() // max(1, len(s.sections)))
        precision = work.precision or s.precision
        if precision == "auto":
            precision = decide(self.models.device, s.size, s.num_cuts).precision
        return threads, precision

    def _start(self, work: Work, precision: str):
        """The optimiser, the continuity picture and the global step at the work's first segment."""
        if work.state is not None:
            opt = self._optimiser(work.state["optimiser"]["z"], precision)
            opt.load_state_dict(work.state["optimiser"])
            if self.camera:
                self.camera.load_state_dict(work.state["camera"])
            return opt, work.state["image"].to(self.models.device), work.state["iteration"]
        if self.camera:  # a section's warm-up picture has no earlier pose
            self.camera.load_state_dict({"frame": self.spec.segments[work.first].frame_start})
        opt = self._optimiser(self.start_latent, precision)
        if work.first > 0:  # a section after the first opens on a picture, not on noise
            self._warm_up(opt, work.section, work.first)
        return opt, None, self.spec.start_iteration[work.first]

    def step_seconds(self, steps: int = TIMED_STEPS) -> float:
        """Seconds one step takes here at the run's size, cut-outs and precision: the mean of
        `steps` steps after an untimed one, which pays for first-call setup (the render seeds
        its own random numbers, so timing first changes no frame)."""
        opt = self._optimiser(self.start_latent, self.setup(Work(0, 0, 0, 0))[1])
        goal = [(noise_target(self.spec.seed, 1.0, self.models.embed_dim, self.models.device),
                 1.0)]
        with self._memory_errors():
            opt.step(goal, 0)
            synchronize(self.models.device)
            start = time.perf_counter()
            for i in range(steps):
                opt.step(goal, i + 1)
            synchronize(self.models.device)
        return (time.perf_counter() - start) / steps

    def _warm_up(self, opt: Optimiser, section: int, first: int) -> None:
        """Unrendered steps towards a section's first goals, seeded by the section's index."""
        torch.manual_seed(section_seed(self.spec.seed, section))
        seg = self.spec.segments[first]
        pairs = self._segment_targets(seg)
        style = self._style_at(self.spec.start_iteration[first])
        n = self.spec.warmup
        for i in range(n):
            opt.step([(t, g.weight_at(0, 1)) for t, g in pairs] + style, i)

    def _opening(self, section: int, precision: str) -> torch.Tensor:
        """The first picture of a later section (1, 3, H, W), made here as its own worker makes
        it: the same warm-up from the same start, the picture its first step is computed on."""
        s, m = self.spec, self.models
        opt = Optimiser(m.vqgan, m.perceptor, self.start_latent, s.optimiser, s.learning_rate,
                        s.init_weight, precision)
        self._warm_up(opt, section, s.sections[section][0])
        with torch.no_grad(), autocast(m.device, precision):
            return m.vqgan.synth(opt.z).detach().float()

    def _fade(self, work: Work) -> Fade | None:
        """The cross-fade at the end of the work's section when another section follows (None:
        no fade); it acts only on the frames of the section's last moments."""
        s = self.spec
        if not s.seam or work.section + 1 >= len(s.sections):
            return None
        first, last = s.sections[work.section]
        end = s.segments[last].frame_end
        start = max(s.segments[first].frame_start, end - round(s.seam * s.fps))
        return Fade(start, end) if start < end else None

    def render(self, work: Work) -> Iterator:
        """Renders the work's segments, yielding Progress, Preview and Finished events."""
        threads, precision = self.setup(work)
        if self.models.device.type == "cpu":
            torch.set_num_threads(threads)
        with self._memory_errors():
            opt, previous, iteration = self._start(work, precision)
        fade, kept = self._fade(work), time.monotonic()
        for index in range(work.first, work.last + 1):
            seg = self.spec.segments[index]
            if (fade and fade.picture is None and work.wants(index) and seg.frames
                    and seg.frame_end > fade.start):
                with self._memory_errors():  # before the segment's seed: its stream is its own
                    fade.picture = self._opening(work.section + 1, precision)
            torch.manual_seed(self.spec.seed + index)
            path, drop, chunk, handed = None, None, None, None
            with tempfile.TemporaryDirectory(dir=self.scratch) as scratch:
                if seg.frames and work.wants(index):
                    path, drop = self._chunk_path(index, Path(scratch))
                events = self._segment(seg, opt, previous, iteration, path, work.job, fade,
                                       rename=drop is None)
                with self._memory_errors(), self._folder_errors(drop):
                    previous, iteration = yield from events
                if path and drop:
                    handed = str(part_path(path))  # written once, where the driver keeps it
                elif path:
                    chunk = path.read_bytes()
            state = None
            if index == work.last or time.monotonic() - kept >= STATE_SECONDS:
                state, kept = self._state(opt, previous, iteration, index), time.monotonic()
            wanted = work.wants(index)
            yield Finished(work.job, work.section, index, chunk,
                           thumbnail_png(previous) if wanted else None, state, wanted, work.repair,
                           peak_gpu_mb(self.models.device)[0], threads, precision,
                           chunk_file=handed)

    def _chunk_path(self, index: int, scratch: Path) -> tuple[Path, Drop | None]:
        """Where segment `index`'s chunk is encoded, and the Drop when that is the run folder
        (this process sees it and may make files there); else in `scratch`, to send as bytes."""
        drop = self.spec.drop
        path = drop.claim(index) if drop and drop.reachable() else None
        return (path, drop) if path else (scratch / "chunk.mp4", None)

    def _state(self, opt: Optimiser, previous: torch.Tensor, iteration: int, index: int) -> dict:
        """What the rest of the section goes on from after segment `index` (on the CPU)."""
        state = {"optimiser": on_cpu(opt.state_dict()), "image": previous.cpu(),
                 "iteration": iteration, "segment": index}
        if self.camera:
            state["camera"] = self.camera.state_dict()
        return state

    @contextlib.contextmanager
    def _folder_errors(self, drop: Drop | None):
        """An encoder that failed because the run folder it wrote into was deleted or replaced
        meanwhile becomes the one line the driver would give (the chunk went with the folder);
        one that the folder's disk refused (full, quota, storage error at the fsync), the
        driver's disk line."""
        try:
            yield
        except (OSError, VideoError) as err:
            if drop is None:
                raise
            if not drop.reachable():
                raise folder_gone(Path(drop.folder)) from None
            if isinstance(err, OSError) and err.errno in DISK_ERRORS:
                raise disk_error(Path(drop.folder), err) from None
            raise

    @contextlib.contextmanager
    def _memory_errors(self):
        """A failed allocation becomes one RenderError line naming what to make smaller."""
        try:
            yield
        except (MemoryError, RuntimeError) as err:
            if isinstance(err, RenderError) or not out_of_memory(err):
                raise
            raise RenderError(f"out of memory at -s {self.width} {self.height}, -cuts "
                              f"{self.spec.num_cuts}; use a smaller -s or fewer -cuts") from None

    def _segment(self, seg: Segment, opt: Optimiser, previous, iteration: int, path, job: int,
                 fade: Fade | None = None, rename: bool = True):
        """Optimises one segment, streaming its frames into `path` (rename False: left under its
        temporary name, see FrameWriter); returns (picture, step)."""
        m = self.models
        pairs = self._segment_targets(seg)
        continuity = m.perceptor.image_target(previous) if previous is not None else None
        counts = frame_sources(seg.iterations, seg.frames)
        writer = (FrameWriter(path, self.width, self.height, self.spec.fps, rename=rename) if path
                  else contextlib.nullcontext())
        n, pending, last_report, written = seg.iterations, 0, time.monotonic(), 0
        finite = torch.ones((), dtype=torch.bool, device=m.device)
        with writer:
            for i in range(n):
                targets = [(t, g.weight_at(i, n)) for t, g in pairs] + self._style_at(iteration)
                if i == 0 and continuity is not None:
                    targets.append((continuity, continuity.weight))
                self._move(opt, i, seg.frame_start + written if counts[i] else None)
                result = opt.step(targets, i)
                finite &= torch.isfinite(result.loss)
                if counts[i] and path:
                    self._frames(writer, result.image, seg.frame_start + written, counts[i],
                                 fade)
                written += counts[i]
                preview = self._preview(result, iteration, job)
                if preview is not None:
                    yield preview
                iteration += 1
                pending += 1
                if time.monotonic() - last_report >= PROGRESS_SECONDS:
                    yield Progress(job, pending)
                    pending, last_report = 0, time.monotonic()
            if not bool(finite):
                raise RenderError(f"the loss became non-finite (nan or inf) in segment "
                                  f"{seg.index + 1}; check the -p/-ip weights and lower -lr")
        if pending:
            yield Progress(job, pending)
        return result.image, iteration

    def _move(self, opt: Optimiser, step: int, frame: int | None) -> None:
        """Before a segment's step: the seed's zoom when due; the camera's move to the pose of
        the frame the step's picture becomes (None: it becomes none)."""
        zoom = self.spec.zoom
        if zoom and zoom.due(step):
            opt.restart(zoom.move(self.models.vqgan, opt.z))  # a fresh optimiser, as the seed's
        if frame is not None and self.camera:
            self.camera.move(self.models.vqgan, opt.z, frame)

    def _frames(self, writer: FrameWriter, image: torch.Tensor, first: int, count: int,
                fade: Fade | None = None) -> None:
        """Queues a step's picture (1, 3, H, W) as frames first .. first + count - 1, each at
        its own camera pose."""
        if self.camera is None:
            self._write(writer, image, first, count, fade)
            return
        for frame in range(first, first + count):
            self._write(writer, self.camera.show(image, frame), frame, 1, fade)

    def _write(self, writer: FrameWriter, image: torch.Tensor, first: int, count: int,
               fade: Fade | None = None) -> None:
        """Queues a picture (1, 3, H, W) as frames first .. first + count - 1, cross-faded where
        the section's fade is, with their burnt-in lyrics."""
        for frame, start, repeat in faded(image, first, count, fade):
            if self.burner is None:
                writer.write(frame, repeat)
                continue
            for piece, times in self.burner.pieces(frame, start, repeat):
                writer.write(piece, times)

    def _preview(self, result, iteration: int, job: int):
        """A Preview every -se steps (else None)."""
        s = self.spec
        if s.save_every and iteration % s.save_every == 0:
            return Preview(job, iteration, to_frame(result.image).numpy(), result.loss.item())
        return None
