"""The songs of one generate command: checked, planned, placed on workers, rendered, finished.

Everything a user can get wrong is checked before any model loads: the pictures, then each song
(decoded, lyrics read, segments and sections planned, its output folder writable), then the
weights and the picture size."""

import os
import random
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from ..options import Options
    from ..song.plan import Plan
    from .job import Outputs
    from .workers import Placement

LYRICS_SUFFIXES = (".csv", ".lrc", ".srt")
SEAM_SECONDS = 0.5  # a section's last half second cross-fades into the next section's opening
DEFAULT_OUTPUT = Path("outputs/output.png")  # the seed's -o; without -o, outputs/<song name>.*


class Fatal(UserError):
    """A problem the user can fix; printed as one line, exit code 1."""


def outputs_for(opts: "Options", song: Path) -> "Outputs":
    """Where a song's video, preview and run folder go.

    No -o: outputs/<song name>.mp4, .png and outputs/<song name>/.
    -o as a file (outputs/output.png): the video is its .mp4 sibling, the run folder its stem.
    -o as a folder (an existing folder that is not itself a run folder, a trailing '/', or a
    batch of songs): <folder>/<song name>.mp4, .png and <song name>/ inside it."""
    from .folder import MANIFEST
    from .job import Outputs

    out = opts.output or DEFAULT_OUTPUT
    draft = "_draft" if opts.draft else ""
    in_outputs = opts.output is None or (len(opts.audio_prompt) > 1 and out == DEFAULT_OUTPUT)
    as_folder = (in_outputs or opts.output_folder or len(opts.audio_prompt) > 1
                 or (out.is_dir() and not (out / MANIFEST).is_file()))
    if as_folder:
        folder = out.parent if in_outputs else out
        if folder.exists() and not folder.is_dir():
            raise Fatal(f"-o {out}: {folder} is a file, not a folder; with several songs -o "
                        "names a folder")
        base = folder / f"{song.stem}{draft}"
        return Outputs(base.with_name(base.name + ".mp4"), base.with_name(base.name + ".png"),
                       base)
    if out.name in ("", ".", "..") or not out.stem:
        raise Fatal(f"-o {out} names no file; give a picture path such as outputs/output.png")
    out = out.with_name(f"{out.stem}{draft}{out.suffix}")
    preview = out if out.suffix.lower() == ".png" else out.with_suffix(".png")
    return Outputs(out.with_suffix(".mp4"), preview, out.with_suffix(""))


def lyrics_for(opts: "Options", song: Path, duration: float, outputs) -> Path | None:
    """The lyrics file of a song: -lyr itself, its <song name>.* in a -lyr folder, or (-lyr auto)
    the synced lyrics LRCLIB has for it, saved as <song name>.lrc beside the song (else beside
    the video: the run folder's identity depends on the lyrics, so they come before it)."""
    from ..song.lrclib import find_lyrics

    if str(opts.lyrics) == "auto":
        return find_lyrics(song, duration, opts.artist, opts.title,
                           save_dir_fallback=outputs.video.parent, required=opts.require_lyrics)
    if opts.lyrics is None or not opts.lyrics.is_dir():
        return opts.lyrics
    for suffix in LYRICS_SUFFIXES:
        if (opts.lyrics / f"{song.stem}{suffix}").is_file():
            return opts.lyrics / f"{song.stem}{suffix}"
    warnings.warn(f"{opts.lyrics} holds no {song.stem}.csv, .lrc or .srt; {song.name} gets no "
                  "lyrics")
    return None


def draft_size(size: tuple[int, int], config: Path) -> tuple[int, int]:
    """--draft's picture: half the width and height (a quarter of the pixels), at least a cell."""
    from ..models.networks import cell_size, read_vqgan_config

    factor = cell_size(read_vqgan_config(config)[1])
    return tuple(max(side // 2 // factor * factor, factor) for side in size)


def inputs_of(opts: "Options", song: Path) -> list[Path]:
    """The files a song's run reads: the song, its lyrics file, the start and prompt pictures."""
    from ..options import parse_prompt, split_prompts

    given = [song, opts.init_image, *(Path(parse_prompt(item)[0])
                                      for item in split_prompts(opts.image_prompts))]
    if opts.lyrics is not None and str(opts.lyrics) != "auto" and not opts.lyrics.is_dir():
        given.append(opts.lyrics)
    return [Path(p) for p in given if p is not None]


def check_clashes(outputs, inputs: list[Path]) -> None:
    """No output of a run may be one of its inputs (a video written over its song, subtitles
    over the lyrics file, the preview over the start picture)."""
    from ..files import same_file

    for what, out in {**outputs.written(), "run folder": outputs.run_dir}.items():
        for given in inputs:
            if same_file(out, given):
                raise Fatal(f"-o {outputs.preview} would write the run's {what} over {given}; "
                            "choose another -o")


def check_batch(song: Path, outputs, claimed: dict) -> None:
    """No output of a song may be another song's of the same batch (song5.mp3's storyboard is
    song5_storyboard.mp3's preview); `claimed` maps each output taken so far to (song, what)."""
    mine = {os.path.abspath(path): what
            for what, path in {**outputs.written(), "run folder": outputs.run_dir}.items()}
    for path, what in mine.items():
        if path in claimed:
            other, other_what = claimed[path]
            raise Fatal(f"its {what} {path} would be the {other_what} of {other}; rename one of "
                        "the songs, or render them separately")
    claimed.update({path: (song, what) for path, what in mine.items()})


def check_pictures(opts: "Options") -> None:
    """The -ii and -ip pictures decode in full (a bad CRC or truncated data is caught here)."""
    from PIL import Image

    from ..options import parse_prompt, split_prompts

    paths = [Path(parse_prompt(item)[0]) for item in split_prompts(opts.image_prompts)]
    for path in paths + ([opts.init_image] if opts.init_image else []):
        try:
            with Image.open(path) as img:
                img.verify()  # chunk checksums
            with Image.open(path) as img:
                img.load()  # the pixels themselves
        except Exception as err:  # OSError, SyntaxError (bad CRC), ValueError, DecompressionBombError
            reason = str(err).splitlines()[0][:100] if str(err) else "unreadable"
            raise Fatal(f"cannot read image {path} ({type(err).__name__}: {reason}); give a PNG "
                        "or JPEG file") from None


def read_pictures(opts: "Options", size: tuple[int, int]) -> tuple:
    """The -ii picture and the -ip pictures with their weights, at the picture size."""
    from ..engine.optimise import load_image
    from ..options import parse_prompt, split_prompts

    prompts = []
    for item in split_prompts(opts.image_prompts):
        path, weight, stop = parse_prompt(item)
        prompts.append((load_image(Path(path), *size), weight, stop))
    init = load_image(opts.init_image, *size) if opts.init_image else None
    return init, tuple(prompts)


def check_memory(size: tuple[int, int], config: Path, device, num_cuts: int,
                 clip_model: str) -> None:
    """Refuses a picture size or cut count whose step could not fit in the device's memory."""
    from ..engine.modelset import step_bytes
    from ..models.networks import read_vqgan_config

    need = step_bytes(read_vqgan_config(config)[1], size, num_cuts, clip_model)
    have = device_memory(device)
    if have and need > have:
        raise Fatal(f"-s {size[0]} {size[1]} with -cuts {num_cuts} needs about "
                    f"{need / 2**30:.0f} GiB for one step (decoder, its attention, cut-outs), "
                    f"more than the {have / 2**30:.0f} GiB of {device}; use a smaller -s or "
                    "fewer -cuts")


def device_memory(device) -> int | None:
    """Total memory of a device in bytes (the machine's RAM for the CPU); None when unknown."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu":
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return None


def choose_settings(precision: str, sections: int, cluster: bool) -> dict:
    """Settings a new run fixes and a resume keeps: precision, CPU threads per section, and how
    long a section's end cross-fades into the next one's opening.

    CPU results depend on the thread count, so it comes from the plan (cores / sections), never
    from the number of workers. On a cluster the cores are each worker's own (threads 0), and
    --precision auto is decided where each section renders: the journal keeps both per section,
    so a resume renders each section as it began."""
    import torch

    threads = 0 if cluster else max(1, torch.get_num_threads() // sections)
    return {"precision": precision, "threads": threads, "seam_seconds": SEAM_SECONDS}


def run_identity(opts: "Options", song: Path, lyrics: Path | None, paths: dict) -> dict:
    """What a resumed run must share with the run it continues: settings, and files by content."""
    from ..options import parse_prompt, split_prompts
    from .job import digest

    weights = {key: [str(Path(path).resolve()), Path(path).stat().st_size]
               for key, path in sorted(paths.items())}
    pictures = [digest(Path(parse_prompt(item)[0])) for item in split_prompts(opts.image_prompts)]
    return {**opts.identity(), "audio": digest(song), "lyrics": digest(lyrics),
            "init_image": digest(opts.init_image), "image_prompt_files": pictures,
            "weights": weights, **({"seed": opts.seed} if opts.seed is not None else {})}


@dataclass(frozen=True)
class Planned:
    """A song that passed its checks: its plan, where it goes, its lyrics file."""

    index: int
    plan: "Plan"
    outputs: "Outputs"
    lyrics: Path | None


def plan_one(index: int, opts: "Options", song: Path) -> Planned:
    """Checks where a song's video goes, decodes it and plans its segments and sections."""
    from ..files import check_writable
    from ..output.subtitles import cues
    from ..song.plan import plan_song, read_song
    from .folder import RunFolder, check_outputs

    outputs = outputs_for(opts, song)
    check_clashes(outputs, inputs_of(opts, song))
    check_writable(outputs.video.parent)
    check_outputs(RunFolder(outputs.run_dir), outputs.written(), overwrite=True)  # a folder in the way
    decoded = read_song(song, opts.audio_sampling_freq)
    lyrics = lyrics_for(opts, song, decoded.duration, outputs)
    plan = plan_song(opts, decoded, lyrics)
    written = outputs.written(bool(cues(plan.lyrics, plan.song.duration)))
    check_outputs(RunFolder(outputs.run_dir), written, opts.overwrite)
    return Planned(index, plan, outputs, lyrics)


def render_spec(opts: "Options", planned: Planned, manifest: dict, size, placement, pictures,
                captions: tuple = (), prints: tuple = (), drop=None):
    """The plain-data description a worker renders this song from (`prints`: the weight files'
    fingerprints a cluster's workers check theirs against; `drop`: the run folder, for workers
    that see it to encode their chunks into)."""
    from ..engine.modelset import WeightChoice
    from ..engine.motion import Zoom
    from ..engine.renderer import RenderSpec

    settings, init_image, image_prompts = manifest["settings"], *pictures
    zoom = (Zoom(opts.zoom_start, opts.zoom_save_every, opts.zoom_scale, opts.zoom_shift_x,
                 opts.zoom_shift_y) if opts.zoom_video else None)
    ray_gpu = placement.ray is not None and placement.device.type == "cuda"
    return RenderSpec(
        weights=WeightChoice.of(opts), device="cuda" if ray_gpu else str(placement.device),
        size=size, segments=tuple(planned.plan.segments), seed=manifest["seed"],
        sr=planned.plan.song.sr, fps=opts.fps, precision=settings["precision"],
        threads=settings["threads"], num_cuts=opts.num_cuts, cut_method=opts.cut_method,
        cut_power=opts.cut_power, augments=opts.augments, optimiser=opts.optimiser,
        learning_rate=opts.learning_rate, init_weight=opts.init_weight, init_image=init_image,
        init_noise=opts.init_noise, prompts=opts.prompts,
        change_prompt_every=opts.change_prompt_every, image_prompts=image_prompts,
        noise_prompts=tuple(zip(opts.noise_prompt_seeds, opts.noise_prompt_weights)),
        zoom=zoom, save_every=opts.save_every, warmup=opts.warmup, compile=opts.compile,
        deterministic=opts.deterministic, captions=captions, react=opts.react,
        sections=tuple(planned.plan.sections),
        seam=settings.get("seam_seconds", 0.0), fingerprints=prints, drop=drop)


def open_job(opts: "Options", planned: Planned, paths: dict, size, placement, pictures,
             precision: str, prints: tuple = ()):
    """Opens (locks) a song's run folder, resuming or starting it, and makes its Job."""
    from ..engine.renderer import Drop
    from ..output.subtitles import cues as lyric_cues
    from .folder import MARKER, RunFolder
    from .job import Job

    plan, outputs = planned.plan, planned.outputs
    settings = choose_settings(precision, len(plan.sections), on_cluster(placement))
    seed = opts.seed if opts.seed is not None else random.randrange(2**31)
    cues = lyric_cues(plan.lyrics, plan.song.duration)
    info = {"audio_path": str(plan.song.path.resolve()), "video": str(outputs.video.resolve()),
            "fps": opts.fps, "output_video_fps": opts.output_video_fps,
            "cues": [asdict(c) for c in cues], "burn_lyrics": opts.burn_lyrics,
            "outputs": [p.name for p in outputs.written(bool(cues)).values()]}
    folder = RunFolder(outputs.run_dir)
    manifest = folder.open(run_identity(opts, plan.song.path, planned.lyrics, paths),
                           plan.segments, plan.sections, opts.overwrite, seed, settings, info)
    drop = Drop(str(folder.path.resolve()), MARKER, folder.handoff_token())
    spec = render_spec(opts, planned, manifest, size, placement, pictures,
                       tuple(cues) if opts.burn_lyrics else (), prints, drop)
    job = Job(planned.index, plan, outputs, folder, manifest, spec, opts.quiet, cues,
              opts.burn_lyrics, opts.verbose)
    settings = manifest["settings"]
    job.log(f"{plan.song.path.name}: seed {manifest['seed']}, {settings['precision']} on "
            f"{placement.device}")
    if on_cluster(placement):
        kinds = {"auto": "GPUs while it has any, else CPUs", "gpu": "GPUs", "cpu": "CPUs"}
        job.log(f"rendering on the Ray cluster at {placement.ray}"
                f"{' (from $RAY_ADDRESS)' if placement.from_env else ''}: {kinds[placement.kind]}")
    return job


def on_cluster(placement) -> bool:
    """Whether the workers run on a Ray cluster (not in this process, nor a local instance)."""
    return placement.ray not in (None, "local")


def run_size(opts: "Options", config: Path) -> tuple[int, int]:
    """The picture size rendered: -s (halved by --draft) in whole VQGAN cells, with a warning
    when that is not what -s asked for."""
    from ..engine.modelset import picture_size
    from ..models.networks import cell_size, read_vqgan_config

    full = picture_size(opts.size, config)
    if tuple(full) != tuple(opts.size):
        cell = cell_size(read_vqgan_config(config)[1])
        warnings.warn(f"-s {opts.size[0]} {opts.size[1]} is rendered as {full[0]}x{full[1]}: "
                      f"pictures are whole {cell}-pixel VQGAN cells")
    return picture_size(draft_size(opts.size, config), config) if opts.draft else full


def plan_lines(planned: Planned, opts: "Options", size: tuple[int, int]) -> list[str]:
    """What a song's run will render, in two lines: the song and its cuts, and the output."""
    from ..output.storyboard import clock

    plan, out = planned.plan, planned.outputs
    lyric_segments = sum(any(g.kind == "text" for g in s.goals) for s in plan.segments)
    frames = plan.segments[-1].frame_end if plan.segments else 0
    return [f"{plan.song.path.name}: {clock(plan.song.duration)} of song, "
            f"{len(plan.segments)} segments ({lyric_segments} with lyrics) in "
            f"{len(plan.sections)} section(s), {plan.steps} steps, {frames} frames at "
            f"{opts.fps:g} fps, {size[0]}x{size[1]}",
            f"video: {out.video} (run folder {out.run_dir}/)"]


def check_songs(opts: "Options", report) -> tuple[list[Path], int]:
    """The songs that exist as files (cheap: nothing is decoded), and how many do not."""
    batch = len(opts.audio_prompt) > 1
    found, missing = [], 0
    for song in opts.audio_prompt:
        if song.is_file():
            found.append(song)
            continue
        report(f"{song}: " * batch + f"{song} not found; check the path (any format ffmpeg "
               "reads: mp3, wav, flac, ogg, m4a)")
        missing += 1
    return found, missing


def generate(opts: "Options", report) -> int:
    """Checks the inputs, finds the weights, plans each song, renders them and joins their
    videos (with --plan, prints the plans and their estimate and stops).

    The weights are found (or downloaded) before any song is analysed, so a machine without
    them fails in seconds. A song that fails its checks or its render is reported
    (`report(line)`) and skipped; the others go on. Returns how many songs failed."""
    from ..engine.modelset import WeightChoice, fingerprints, resolve_weights
    from .job import say
    from .workers import make_scheduler, place

    name = lambda song, message: f"{song}: {message}" if len(opts.audio_prompt) > 1 else message  # noqa: E731
    placement = place(opts)
    check_pictures(opts)
    songs, failed = check_songs(opts, report)
    if not songs:
        return failed
    paths = resolve_weights(WeightChoice.of(opts), opts.quiet)
    size = run_size(opts, paths["config"])
    if placement.device is not None:
        check_memory(size, paths["config"], placement.device, opts.num_cuts, opts.clip_model)
    planned, claimed = [], {}
    for index, song in enumerate(opts.audio_prompt):
        if song not in songs:
            continue
        try:
            one = plan_one(index, opts, song)
            check_batch(song, one.outputs, claimed)
            planned.append(one)
        except UserError as err:
            report(name(song, err))
            failed += 1
    if not planned:
        return failed
    pictures = read_pictures(opts, size)
    prints = fingerprints(paths) if on_cluster(placement) else ()
    sections = sum(len(song.plan.sections) for song in planned)
    if placement.workers > 1 and sections < placement.workers:
        warnings.warn(f"--workers {placement.workers}, but there are {sections} section(s) to "
                      "render; give --sections auto (or a number) so the workers can share a song")
    scheduler = make_scheduler(placement)
    jobs = []
    try:
        placement = scheduler.placement(placement)
        precision = opts.precision
        if precision == "auto":
            choice = scheduler.precision(placement.device, size, opts.num_cuts)
            if choice is None:
                say(opts.quiet or not opts.verbose,
                    "precision auto: decided where each section renders")
            else:
                precision = choice.precision
                say(opts.quiet or not opts.verbose,
                    f"precision {precision} (auto: {choice.reason})")
        for song in planned:
            for line in plan_lines(song, opts, size):
                say(opts.quiet and not opts.plan_only, line)
        step = None
        if opts.plan_only or not opts.quiet:
            step = step_seconds(scheduler, opts, planned[0], size, placement, pictures,
                                precision, prints)
        if opts.plan_only:
            costs = [cost for song in planned for cost in work_costs(song.plan, opts.warmup)]
            say(False, estimate_line(costs, placement, precision, step))
            return failed
        for song in planned:
            try:
                jobs.append(open_job(opts, song, paths, size, placement, pictures, precision,
                                     prints))
            except UserError as err:
                report(name(song.plan.song.path, err))
                failed += 1
        errors = render_all(jobs, scheduler, opts, step, precision, placement)
    finally:
        scheduler.close()
        for job in jobs:
            job.close()
    for job in jobs:
        if job.index in errors:
            report(name(job.plan.song.path, errors[job.index]))
    return failed + len(errors)


def step_seconds(scheduler, opts: "Options", planned: Planned, size: tuple[int, int],
                 placement: "Placement", pictures: tuple, precision: str, prints: tuple) -> float:
    """Seconds one step of this song's render takes where the work runs (for the estimate)."""
    settings = choose_settings(precision, len(planned.plan.sections), on_cluster(placement))
    spec = render_spec(opts, planned, {"seed": opts.seed or 0, "settings": settings}, size,
                       placement, pictures, prints=prints)
    return scheduler.step_seconds(spec, planned.plan.song.samples)


def work_costs(plan: "Plan", warmup: int) -> list[int]:
    """Steps of each section of a plan rendered from its start: its warm-up, and (all but the
    last) the next section's opening, made for the cross-fade, included."""
    last = len(plan.sections) - 1
    return [sum(s.iterations for s in plan.segments[first:end + 1]) + (warmup if first else 0)
            + (warmup if k < last else 0) for k, (first, end) in enumerate(plan.sections)]


def estimate_line(costs: list[int], placement: "Placement", precision: str,
                  step: float | None) -> str:
    """The time estimate before a render: sections spread longest first over the workers,
    each step taking the time measured on the run's device."""
    from ..output.storyboard import clock
    from .workers import makespan

    if step is None:
        return f"{sum(costs)} steps to render"
    seconds = makespan(costs, max(1, placement.workers)) * step
    return (f"estimate: about {clock(seconds)} for {sum(costs)} steps ({step:.3g} s a "
            f"step, timed on {placement.device} in {precision} at the run's size; "
            f"{max(1, placement.workers)} worker(s))")


def render_all(jobs: list, scheduler, opts: "Options", step: float | None, precision: str,
               placement: "Placement") -> dict:
    """Renders the jobs (none: nothing to do); {job index: error line} of those that failed."""
    from .job import render_jobs

    if not jobs:
        return {}
    estimate = None if step is None else (lambda costs: estimate_line(costs, placement, precision, step))
    return render_jobs(jobs, scheduler, opts.quiet, estimate)
