"""Command lines of generate.py and generate_interpolate.py: the seed's flags, checked up front."""

import argparse
import contextlib
import math
import os
import signal
import sys
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    from .engine.motion import ReactSettings
from .engine.guidance import AUGMENTS, CUT_METHODS, DEFAULT_AUGMENTS
from .engine.optimise import OPTIMISERS, PRECISIONS

MODES = {"beats": "generate.py", "interpolate": "generate_interpolate.py"}
# The seed's -ips default for each script: generate.py's loudness rule, generate_interpolate.py's 100.
DEFAULT_IPS = {"beats": 0.0, "interpolate": 100.0}
AUDIO_SUFFIXES = (".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma",
                  ".aif", ".aiff")
# Settings that change how a run is shown, where it lives or who renders it, not what it renders:
# a resumed run may differ in these.
NOT_IDENTITY = {"output", "output_folder", "quiet", "overwrite", "save_every", "cuda_device", "gpu_id",
                "deterministic", "video", "output_video_fps", "compile", "workers", "ray", "ray_device",
                # files: compared by content (song, lyrics, start picture) or by resolved path
                # and size (weights) in run_identity, not by how they were spelled
                "audio_prompt", "lyrics", "init_image", "seed", "checkpoints", "clip_model",
                "artist", "title", "require_lyrics",
                "vqgan_config", "vqgan_checkpoint", "wav2clip_checkpoint"}


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def finite(text: str) -> float:
    """An argparse type: a finite number (no nan, no inf)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


class Range:
    """An argparse type: a finite number of `kind` from `low` (excluded when `open_low`) to
    `high`; str() is the range as --help shows it."""

    def __init__(self, kind: type, low: float, high: float, open_low: bool = False):
        self.kind, self.low, self.high, self.open_low = kind, low, high, open_low
        self.__name__ = "whole number" if kind is int else "number"  # argparse's error text

    def __str__(self) -> str:
        if self.open_low:
            return f"above {self.low:g}, at most {self.high:g}"
        return f"{self.low:g} to {self.high:g}"

    def __call__(self, text: str):
        try:
            value = int(text) if self.kind is int else finite(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {self.__name__}") from None
        above = value > self.low if self.open_low else value >= self.low
        if not (above and value <= self.high):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; give a {self.__name__} "
                                             f"{'from ' if not self.open_low else ''}{self}")
        return value


# The range of each numeric flag (checked at parsing, shown in --help). Upper bounds are far
# beyond any useful value but keep every number finite in float32 and every plan small.
WEIGHT = Range(float, -1e4, 1e4)  # a prompt's weight (noise, text, picture)
RANGES = {
    "iterations": Range(int, 1, 10**7),
    "iterations_per_second": Range(float, 0, 10_000),
    "save_every": Range(int, 0, 10**9),
    "size": Range(int, 1, 100_000),
    "init_weight": Range(float, 0, 1e4),
    "noise_prompt_weights": WEIGHT,
    "learning_rate": Range(float, 0, 100, open_low=True),
    "num_cuts": Range(int, 1, 100_000),
    "cut_power": Range(float, 0, 100, open_low=True),
    "zoom_start": Range(int, 0, 10**9),
    "zoom_save_every": Range(int, 1, 10**9),
    "zoom_scale": Range(float, 0.1, 10),
    "zoom_shift_x": Range(int, -100_000, 100_000),
    "zoom_shift_y": Range(int, -100_000, 100_000),
    "change_prompt_every": Range(int, 0, 10**9),
    "video_length": Range(float, 0.5, 3600),  # Wav2CLIP hears at least 0.5 s
    "output_video_fps": Range(float, 0, 240),
    "input_video_fps": Range(float, 1, 240),
    "fps": Range(float, 1, 240),
    "audio_sampling_freq": Range(int, 8000, 192_000),
    "warmup": Range(int, 0, 100_000),
    "workers": Range(int, 1, 1024),
    "lyric_beats": Range(int, 1, 10_000),
}


def seed_value(text: str) -> int:
    """An argparse type: a seed, a whole number from 0 to 2**32 - 1."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed; give a whole number from 0 to "
                                         f"{2**32 - 1}")
    return value


def gpu_list(text: str) -> tuple[int, ...]:
    """An argparse type: GPU indices, '0' or '0,1,2,3'."""
    try:
        ids = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a GPU index or a list like 0,1,2") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"{text!r}: GPU indices are distinct and not negative")
    return ids


def section_count(text: str) -> str | int:
    """An argparse type: 'auto' or a number of sections >= 1."""
    from .song.sections import SectionError, parse_request

    try:
        return parse_request(text)
    except SectionError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


@dataclass(frozen=True)
class Options:
    """Everything a run needs, checked; field names follow the seed's argparse dests."""

    mode: str  # 'beats' (generate.py) or 'interpolate' (generate_interpolate.py)
    audio_prompt: tuple[Path, ...]  # the songs (files; folders already listed)
    lyrics: Path | None  # timestamped lyrics (csv, lrc, srt); a folder of them for several songs
    output: Path  # the seed's -o PNG; the video is its .mp4 sibling, the run folder its stem
    output_folder: bool  # -o was written with a trailing '/': a folder
    prompts: str | None  # style prompts 'a:w:s|b', '^' separating -cpe phrases
    image_prompts: str | None  # style images 'path:w|path'
    iterations: int | None  # total steps for the song (sets the per-second rate)
    iterations_per_second: float  # steps per second of song; 0: loudness-driven
    save_every: int  # preview PNG and loss line every N steps (0: never)
    size: tuple[int, int]  # width, height in pixels (rounded down to the VQGAN's cell)
    init_image: Path | None  # start picture
    init_noise: str | None  # 'pixels' or 'gradient' start
    init_weight: float  # pull of the latent towards zero, fading over each segment
    clip_model: str  # CLIP name or checkpoint path
    vqgan_config: Path | None  # taming yaml (None: the default model in the checkpoints folder)
    vqgan_checkpoint: Path | None  # taming ckpt
    wav2clip_checkpoint: Path | None  # Wav2CLIP.pt
    checkpoints: Path | None  # weights folder
    noise_prompt_seeds: tuple[int, ...]  # noise prompts
    noise_prompt_weights: tuple[float, ...]
    learning_rate: float
    cut_method: str
    num_cuts: int
    cut_power: float
    augments: tuple[str, ...]
    seed: int | None
    optimiser: str
    video: bool  # the seed's -vid; a video is always made
    zoom_video: bool  # zoom/shift motion
    zoom_start: int
    zoom_save_every: int
    zoom_scale: float
    zoom_shift_x: int
    zoom_shift_y: int
    change_prompt_every: int  # -cpe: cycle the '^' phrases of -p every N steps
    video_length: float  # chunk seconds when there are no beats (or no lyrics, interpolate)
    output_video_fps: float  # motion-interpolate the final video to this fps (0: off)
    fps: float  # frames per second of the rendered video
    deterministic: bool
    cuda_device: str | None
    gpu_id: tuple[int, ...]  # CUDA GPU indices; several: one worker each
    audio_sampling_freq: int
    lyric_beats: int  # beat segments each lyric line guides (beats mode)
    blend: bool  # cross-fade text into audio instead of halves (interpolate mode)
    precision: str  # 'auto', 'fp32', 'bf16', 'fp16'
    compile: str | None  # torch.compile mode for the decoder and CLIP, or None
    sections: str | int  # 'auto' or a number: parts of the song that render in parallel
    warmup: int  # unrendered steps that open each section after the first
    artist: str | None  # -lyr auto: the song's artist (else its tags)
    title: str | None  # -lyr auto: the song's title (else its tags)
    require_lyrics: bool  # -lyr auto: stop when no synced lyrics are found
    react: "ReactSettings | None"  # --react's settings, or None
    burn_lyrics: bool  # draw the lyrics into the frames instead of a subtitle track
    draft: bool  # a quarter of the pixels and a fifth of the steps, to *_draft.mp4
    workers: int | None  # parallel workers (None: one per -gid GPU, else 1)
    ray: str | None  # None: in this process for one worker, else 'local', 'auto' or an address
    ray_device: str  # a cluster's workers: 'auto' (GPUs while it has any, else CPUs), 'gpu', 'cpu'
    overwrite: bool
    quiet: bool

    def identity(self) -> dict:
        """The settings a resumed run must share with the run it continues."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()
                if k not in NOT_IDENTITY}


def add_seed_flags(p: argparse.ArgumentParser, mode: str) -> None:
    """The seed's flags (and ours), shared by both generate scripts."""
    a = p.add_argument
    a("-ap", "--audio_prompt", type=Path, nargs="+", required=True,
      help="the song (any format ffmpeg reads); several files or a folder make a batch")
    a("-lyr", "--lyrics", type=Path, default=None,
      help="timestamped lyrics: .csv, .lrc or .srt (a batch: a folder of <song name>.lrc/.csv/"
           ".srt); auto: synced lyrics from LRCLIB, saved as <song name>.lrc and reused")
    a("-o", "--output", default="outputs/output.png",
      help="preview picture; the video is written beside it as .mp4, chunks in its folder "
           "(a folder: <song name>.mp4 inside it)")
    a("-p", "--prompts", default=None, help="style prompts for the whole video, 'text:weight:stop|...'")
    a("-ip", "--image_prompts", default=None, help="style images, 'path:weight|...'")
    a("-i", "--iterations", type=RANGES["iterations"], default=None, help="total steps for the song (instead of -ips)")
    a("-ips", "--iterations_per_second", type=RANGES["iterations_per_second"], default=None,
      help=f"steps per second of song; 0: 10-120 by loudness (default {DEFAULT_IPS[mode]:g})")
    a("-se", "--save_every", type=RANGES["save_every"], default=50, help="preview picture and loss every N steps")
    a("-s", "--size", nargs=2, type=RANGES["size"], default=[512, 512], metavar=("W", "H"), help="picture size")
    a("-ii", "--init_image", type=Path, default=None, help="start from this picture")
    a("-in", "--init_noise", choices=["pixels", "gradient"], default=None, help="start from noise")
    a("-iw", "--init_weight", type=RANGES["init_weight"], default=0.0,
      help="pull of the latent towards zero (the seed's rule), fading within each segment")
    a("-m", "--clip_model", default="ViT-B/32", help="CLIP model name or checkpoint path")
    a("-conf", "--vqgan_config", type=Path, default=None,
      help="VQGAN yaml (default: checkpoints/vqgan_imagenet_f16_16384.yaml)")
    a("-ckpt", "--vqgan_checkpoint", type=Path, default=None,
      help="VQGAN ckpt (default: checkpoints/vqgan_imagenet_f16_16384.ckpt)")
    a("--wav2clip_checkpoint", type=Path, default=None, help="Wav2CLIP weights (default: checkpoints/Wav2CLIP.pt)")
    a("--checkpoints", type=Path, default=None,
      help="weights folder (default: $MUSIC2VIDEO_CHECKPOINTS or ./checkpoints)")
    a("-nps", "--noise_prompt_seeds", nargs="*", type=seed_value, default=[], help="noise prompt seeds")
    a("-npw", "--noise_prompt_weights", nargs="*", type=WEIGHT, default=[], help="noise prompt weights")
    a("-lr", "--learning_rate", type=RANGES["learning_rate"], default=0.1, help="learning rate")
    a("-cutm", "--cut_method", choices=CUT_METHODS, default="latest", help="cut-out method")
    a("-cuts", "--num_cuts", type=RANGES["num_cuts"], default=32, help="cut-outs per step")
    a("-cutp", "--cut_power", type=RANGES["cut_power"], default=1.0, help="cut size power (crop methods)")
    a("-aug", "--augments", nargs="+", action="append", choices=AUGMENTS, default=None,
      help=f"augments for the latest/nrupdated methods (default: {' '.join(DEFAULT_AUGMENTS)})")
    a("-sd", "--seed", type=seed_value, default=None, help="random seed (same seed, same frames on the CPU)")
    a("-opt", "--optimiser", choices=OPTIMISERS, default="Adam", help="optimiser")
    a("-vid", "--video", action="store_true", help="accepted for the seed's commands; a video is always made")
    a("-zvid", "--zoom_video", action="store_true", help="zoom/shift the picture as it evolves")
    a("-zs", "--zoom_start", type=RANGES["zoom_start"], default=0, help="zoom from this step on")
    a("-zse", "--zoom_save_every", type=RANGES["zoom_save_every"], default=10, help="zoom every N steps")
    a("-zsc", "--zoom_scale", type=RANGES["zoom_scale"], default=0.99, help="zoom factor per zoom (<1 zooms out)")
    a("-zsx", "--zoom_shift_x", type=RANGES["zoom_shift_x"], default=0, help="shift right per zoom, pixels")
    a("-zsy", "--zoom_shift_y", type=RANGES["zoom_shift_y"], default=0, help="shift down per zoom, pixels")
    a("-cpe", "--change_prompt_every", type=RANGES["change_prompt_every"], default=0,
      help="cycle the '^' phrases of -p every N steps")
    a("-vl", "--video_length", type=RANGES["video_length"], default=10,
      help="chunk seconds when there is no beat/lyric to cut at")
    a("-ofps", "--output_video_fps", type=RANGES["output_video_fps"], default=0,
      help="motion-interpolate the video to this fps")
    a("-ifps", "--input_video_fps", type=RANGES["input_video_fps"], default=None,
      help="rendered fps before -ofps (same as --fps)")
    a("--fps", type=RANGES["fps"], default=None, help="frames per second of the rendered video (default 30)")
    a("-d", "--deterministic", action="store_true", help="cudnn deterministic mode")
    a("-vsd", "--video_style_dir", default=None, help="not supported: styles a video's frames, not a song")
    a("-cd", "--cuda_device", default=None, help="device, e.g. cuda:1, mps or cpu (overrides -gid)")
    a("-gid", "--gpu_id", type=gpu_list, default=(0,),
      help="CUDA GPU index, or a list (0,1,2,3): one worker per GPU")
    a("-sf", "--audio_sampling_freq", type=RANGES["audio_sampling_freq"], default=16000,
      help="sample rate for the audio embeddings")
    a("--precision", choices=("auto", *PRECISIONS), default="auto",
      help="arithmetic of the loop; auto: bf16 where it is native and faster here, else fp32")
    a("--compile", default=None, choices=("default", "reduce-overhead", "max-autotune-no-cudagraphs"),
      help="torch.compile the decoder and CLIP with this mode (minutes of compiling first)")
    a("--sections", type=section_count, default=1,
      help="parts of the song cut at its structure that render in parallel: a number, or auto "
           "(about one per 30 s)")
    a("--warmup", type=RANGES["warmup"], default=50,
      help="unrendered steps that open each section after the first, so it starts on a picture")
    a("--workers", type=RANGES["workers"], default=None,
      help="sections rendered at once (default: one per -gid GPU, else 1)")
    a("--ray", default=None, metavar="ADDRESS",
      help="run the workers on Ray: local (default for several workers, or to ignore "
           "$RAY_ADDRESS), auto or a cluster address (default: $RAY_ADDRESS when set)")
    a("--ray_device", choices=("auto", "gpu", "cpu"), default="auto",
      help="what a Ray cluster's workers render on: auto (GPUs while the cluster has any, else "
           "CPUs, looked at again as nodes come and go), gpu (wait for GPU nodes) or cpu")
    a("--artist", default=None, help="-lyr auto: the artist (default: the song's tags)")
    a("--title", default=None, help="-lyr auto: the title (default: the song's tags)")
    a("--require_lyrics", action="store_true",
      help="-lyr auto: stop when no synced lyrics are found, instead of going on with the audio")
    a("--react", nargs="?", const="", default=None, metavar="KINDS",
      help="camera motion on the song's onsets and loudness: zoom, rotate, shift, drift, decay, "
           "each optionally =VALUE (alone: zoom and drift)")
    a("--burn_lyrics", action="store_true",
      help="draw the lyrics into the frames (bottom centre) instead of a subtitle track")
    a("--draft", action="store_true",
      help="a quick check of timing and lyrics: a quarter of the pixels and a fifth of the "
           "steps, written to <output>_draft.mp4 with its own run folder")
    a("--overwrite", action="store_true", help="replace a different earlier run in the run folder")
    a("-q", "--quiet", action="store_true", help="no progress bar or log lines")


def get_parser(mode: str) -> argparse.ArgumentParser:
    """The parser of one generate script."""
    about = {"beats": "Music video cut on the song's beats, guided by its audio and lyrics.",
             "interpolate": "Music video cut at lyric lines: text leads each stretch, audio ends it."}
    p = _Parser(prog=MODES[mode], description=about[mode],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_seed_flags(p, mode)
    if mode == "beats":
        p.add_argument("--lyric_beats", type=RANGES["lyric_beats"], default=1, help="beat segments each lyric guides")
    else:
        p.add_argument("--blend", action="store_true", help="cross-fade text into audio over each stretch")
    for action in p._actions:  # every number's range, in --help
        if isinstance(action.type, Range):
            action.help = f"{action.help}; {action.type}"
    return p


def _check_flags(p: argparse.ArgumentParser, args, mode: str) -> None:
    """Rejects impossible or conflicting flags with parser.error."""
    if args.iterations is not None and args.iterations_per_second is not None:
        p.error("-i takes a positive total and cannot be combined with -ips; give one of them")
    if args.iterations_per_second is None:
        args.iterations_per_second = 0.0 if args.iterations else DEFAULT_IPS[mode]
    if args.video_style_dir:
        p.error("-vsd (styling a folder of video frames) is not supported: this tool renders a "
                "song; drop -vsd")
    if len(args.noise_prompt_seeds) != len(args.noise_prompt_weights):
        p.error("-nps and -npw need one weight per seed")
    if args.change_prompt_every and "^" not in (args.prompts or ""):
        p.error("-cpe cycles the '^'-separated phrases of -p; give -p 'a^b^c'")
    if args.init_image and args.init_noise:
        p.error("-ii and -in both set the start picture; give one of them")
    if args.cuda_device and (len(args.gpu_id) > 1 or (args.workers or 1) > 1):
        p.error("-cd picks one device; for several GPUs give -gid 0,1,... instead")
    for path in (args.output, *args.audio_prompt):
        if any(ord(c) < 32 for c in str(path)):
            p.error(f"{str(path)!r} holds a control character (a newline?); give a plain path")
    _check_prompts(p, args)
    _check_lyrics_lookup(p, args)
    zoom = (args.zoom_start, args.zoom_save_every, args.zoom_scale, args.zoom_shift_x,
            args.zoom_shift_y)
    if not args.zoom_video and zoom != (0, 10, 0.99, 0, 0):
        warnings.warn("the zoom settings (-zs -zse -zsc -zsx -zsy) only act with -zvid")
    _check_fps(p, args)


def _check_lyrics_lookup(p: argparse.ArgumentParser, args) -> None:
    """--react parsed; --artist/--title/--require_lyrics only with -lyr auto."""
    from .engine.motion import ReactError, parse_react

    if args.react is not None:
        try:
            args.react = parse_react(args.react)
        except ReactError as err:
            p.error(str(err))
    auto = str(args.lyrics) == "auto"
    if not auto and (args.artist or args.title or args.require_lyrics):
        p.error("--artist, --title and --require_lyrics go with -lyr auto")
    if auto and len(args.audio_prompt) > 1 and (args.artist or args.title):
        p.error("--artist and --title name one song; a batch with -lyr auto reads each song's tags")


def _check_prompts(p: argparse.ArgumentParser, args) -> None:
    """Every prompt weight and stop is a finite number."""
    from .engine.guidance import parse_prompt, split_prompts

    for flag, text in (("-p", args.prompts), ("-ip", args.image_prompts)):
        for item in split_prompts((text or "").replace("^", "|")):
            _, weight, stop = parse_prompt(item)
            if not math.isfinite(weight):
                p.error(f"{flag} {item!r}: the weight must be a finite number")
            if not WEIGHT.low <= weight <= WEIGHT.high:
                p.error(f"{flag} {item!r}: the weight must be from {WEIGHT}")
            if math.isnan(stop) or stop == math.inf:
                p.error(f"{flag} {item!r}: the stop must be a finite number")


def _check_fps(p: argparse.ArgumentParser, args) -> None:
    """Resolves --fps and its seed alias -ifps, and checks -ofps against them."""
    if args.fps is not None and args.input_video_fps is not None and args.fps != args.input_video_fps:
        p.error("--fps and -ifps both set the rendered frame rate; give one of them")
    args.fps = args.fps or args.input_video_fps or 30.0
    if args.output_video_fps and args.output_video_fps <= args.fps:
        p.error(f"-ofps ({args.output_video_fps:g}) must be above the rendered --fps ({args.fps:g})")


def list_songs(p: argparse.ArgumentParser, items: list[Path]) -> tuple[Path, ...]:
    """The song files of -ap: files as given, folders listed (audio files, sorted)."""
    songs = []
    for item in items:
        if item.is_dir():
            found = sorted(f for f in item.iterdir()
                           if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                p.error(f"-ap {item}: the folder holds no audio file ({', '.join(AUDIO_SUFFIXES)})")
            songs += found
        else:
            songs.append(item)
    stems = [s.stem for s in songs]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        p.error(f"-ap: several songs are named {twice[0]!r}; their videos would share a name, "
                "so rename one or render them separately")
    return tuple(songs)


def parse_options(mode: str, argv=None) -> Options:
    """Parses and checks a generate command line."""
    p = get_parser(mode)
    args = p.parse_args(None if argv is None else [str(a) for a in argv])
    _check_flags(p, args, mode)
    args.output_folder = args.output.endswith(("/", os.sep))
    args.output = Path(args.output)
    args.audio_prompt = list_songs(p, args.audio_prompt)
    if (len(args.audio_prompt) > 1 and args.lyrics is not None and not args.lyrics.is_dir()
            and str(args.lyrics) != "auto"):
        p.error("-lyr with several songs names a folder of <song name>.csv/.lrc/.srt files")
    values = vars(args)
    values["augments"] = tuple(a for group in (args.augments or [DEFAULT_AUGMENTS]) for a in group)
    values["size"] = tuple(args.size)
    values["noise_prompt_seeds"] = tuple(args.noise_prompt_seeds)
    values["noise_prompt_weights"] = tuple(args.noise_prompt_weights)
    values.setdefault("lyric_beats", 1)
    values.setdefault("blend", False)
    values.pop("input_video_fps")
    values.pop("video_style_dir")
    return Options(mode=mode, **{f.name: values[f.name] for f in fields(Options) if f.name != "mode"})


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM (a cluster's scheduler stopping the job) stops the run as Ctrl-C does: finished
    segments kept, temporary files removed, one line."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one 'warning: ...' line that does not break the progress bar."""
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def main(mode: str, argv=None) -> int:
    """Runs a generate command line; user errors are one stderr line and a non-zero exit."""
    prog = MODES[mode]

    def report(message: str) -> None:
        print(f"{prog}: error: {message}", file=sys.stderr)

    from .driver.pipeline import generate

    with warnings.catch_warnings(), terminate_as_interrupt():
        warnings.simplefilter("ignore")
        warnings.filterwarnings("default", module=r"music2video\.")
        warnings.showwarning = _show_warning
        opts = parse_options(mode, argv)
        try:
            failed = generate(opts, report, (UserError,))
        except UserError as err:
            report(str(err))
            return 1
        except KeyboardInterrupt:
            print(f"{prog}: interrupted; finished segments are kept: run the same command again "
                  "to resume", file=sys.stderr)
            return 130
    return 1 if failed else 0
