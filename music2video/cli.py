"""The command lines: `music2video SONG [flags]`, and the seed's generate.py and
generate_interpolate.py, with the seed's flags, checked up front. Parsing (and --help) loads
neither torch nor numpy."""

import argparse
import contextlib
import math
import os
import signal
import sys
import warnings
from dataclasses import fields
from pathlib import Path

from . import __version__
from .errors import UserError
from .options import (
    AUGMENTS,
    CUT_METHODS,
    DEFAULT_AUGMENTS,
    DEFAULT_IPS,
    MODES,
    OPTIMISERS,
    PRECISIONS,
    Options,
    ReactError,
    parse_prompt,
    parse_react,
    split_prompts,
)

PROG = "music2video"  # the installed command; MODES names the seed's two scripts
AUDIO_SUFFIXES = (".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma",
                  ".aif", ".aiff")
ZOOM_DEFAULTS = (0, 10, 0.99, 0, 0)  # -zs -zse -zsc -zsx -zsy
EXAMPLES = """examples:
  {prog} song.mp3                                  video named after the song, in outputs/
  {prog} song.mp3 -lyr song.lrc -s 256 256 --plan  the plan and its time estimate, no render
  {prog} song.mp3 -lyr auto --react                lyrics from LRCLIB, camera on the beat
  {prog} album/ -gid 0,1,2,3 --sections auto       an album's sections on four GPUs
  music2video-download --list                           where the weights go, what is there

the seed's commands work as they did:
  {seed}"""
SEED_EXAMPLE = {
    "beats": "python generate.py -vid -o outputs/output.png -ap song.mp3 -lyr lyrics/song.csv "
             "-gid 0 -ips 100",
    "interpolate": "python generate_interpolate.py -vid -o outputs/output.png -ap song.mp3 "
                   "-lyr lyrics/song.csv",
}


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


class _Help(argparse.RawDescriptionHelpFormatter):
    """Help that shows each flag's default once: only a real one, and only where the text does
    not already say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        quiet = default is None or default is False or default == [] or default is argparse.SUPPRESS
        if quiet or "default" in text or not action.option_strings:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})"


def add_flags(p: argparse.ArgumentParser, mode: str | None) -> None:
    """Every flag of a generate command, in groups (the seed's flags keep their names); mode
    None is the music2video command, which takes both modes' flags and --interpolate."""
    ips = (f"default {DEFAULT_IPS[mode]:g}" if mode else
           f"default {DEFAULT_IPS['beats']:g}; {DEFAULT_IPS['interpolate']:g} with --interpolate")
    g = p.add_argument_group("input").add_argument
    g("songs", nargs="*", type=Path, metavar="SONG",
      help="the song (any format ffmpeg reads); several files or a folder make a batch")
    g("-ap", "--audio_prompt", type=Path, nargs="+", default=None, metavar="SONG",
      help="the song, as the seed's scripts take it (same as SONG)")
    if mode is None:
        g("--interpolate", action="store_true",
          help="cut at lyric lines, text then audio (generate_interpolate.py); else on beats")
    g("-sf", "--audio_sampling_freq", metavar="HZ", type=RANGES["audio_sampling_freq"], default=16000,
      help="sample rate for beats and the audio embeddings")
    g("-vsd", "--video_style_dir", metavar="DIR", default=None,
      help="not supported: it styles a video's frames, not a song")

    g = p.add_argument_group("lyrics").add_argument
    g("-lyr", "--lyrics", metavar="FILE", type=Path, default=None,
      help="timestamped lyrics: .csv, .lrc or .srt (a batch: a folder of <song name>.lrc/.csv/"
           ".srt); auto: synced lyrics from LRCLIB, saved as <song name>.lrc and reused")
    if mode in ("beats", None):
        g("--lyric_beats", metavar="N", type=RANGES["lyric_beats"], default=1,
          help="beat segments each lyric line guides")
    if mode in ("interpolate", None):
        g("--blend", action="store_true",
          help="cross-fade text into audio over each stretch (interpolate mode)")
    g("--artist", metavar="NAME", default=None, help="-lyr auto: the artist (default: the song's tags)")
    g("--title", metavar="NAME", default=None, help="-lyr auto: the title (default: the song's tags)")
    g("--require_lyrics", action="store_true",
      help="-lyr auto: stop when no synced lyrics are found, instead of going on with the audio")

    g = p.add_argument_group("prompts and style").add_argument
    g("-p", "--prompts", metavar="TEXT", default=None, help="style prompts for the whole video, 'text:weight:stop|...'")
    g("-cpe", "--change_prompt_every", metavar="N", type=RANGES["change_prompt_every"], default=0,
      help="cycle the '^' phrases of -p every N steps")
    g("-ip", "--image_prompts", metavar="TEXT", default=None, help="style images, 'path:weight:stop|...'")
    g("-nps", "--noise_prompt_seeds", metavar="SEED", nargs="*", type=seed_value, default=[], help="noise prompt seeds")
    g("-npw", "--noise_prompt_weights", metavar="W", nargs="*", type=WEIGHT, default=[],
      help="noise prompt weights, one per seed")
    g("-ii", "--init_image", metavar="FILE", type=Path, default=None, help="start from this picture")
    g("-in", "--init_noise", metavar="KIND", choices=["pixels", "gradient"], default=None, help="start from noise")
    g("-iw", "--init_weight", metavar="W", type=RANGES["init_weight"], default=0.0,
      help="pull of the latent towards zero (the seed's rule), fading within each segment")

    g = p.add_argument_group("models").add_argument
    g("-m", "--clip_model", metavar="NAME", default="ViT-B/32", help="CLIP model name or checkpoint path")
    g("-conf", "--vqgan_config", metavar="FILE", type=Path, default=None,
      help="VQGAN yaml (default: vqgan_imagenet_f16_16384.yaml in the weights folder)")
    g("-ckpt", "--vqgan_checkpoint", metavar="FILE", type=Path, default=None,
      help="VQGAN ckpt (default: vqgan_imagenet_f16_16384.ckpt in the weights folder)")
    g("--wav2clip_checkpoint", metavar="FILE", type=Path, default=None,
      help="Wav2CLIP weights (default: Wav2CLIP.pt in the weights folder)")
    g("--checkpoints", metavar="DIR", type=Path, default=None,
      help="weights folder (default: $MUSIC2VIDEO_CHECKPOINTS, else ./checkpoints when it holds "
           "the files, else $MUSIC2VIDEO_HOME or ~/.cache/music2video)")

    g = p.add_argument_group("optimisation").add_argument
    g("-i", "--iterations", metavar="N", type=RANGES["iterations"], default=None,
      help="total steps for the song (instead of -ips)")
    g("-ips", "--iterations_per_second", metavar="N", type=RANGES["iterations_per_second"], default=None,
      help=f"steps per second of song; 0: 10-120 by loudness ({ips})")
    g("-lr", "--learning_rate", metavar="LR", type=RANGES["learning_rate"], default=0.1, help="learning rate")
    g("-opt", "--optimiser", metavar="NAME", choices=OPTIMISERS, default="Adam", help="optimiser")
    g("-cutm", "--cut_method", metavar="NAME", choices=CUT_METHODS, default="latest", help="cut-out method")
    g("-cuts", "--num_cuts", metavar="N", type=RANGES["num_cuts"], default=32, help="cut-outs per step")
    g("-cutp", "--cut_power", metavar="P", type=RANGES["cut_power"], default=1.0, help="cut size power (crop methods)")
    g("-aug", "--augments", metavar="CODE", nargs="+", action="append", choices=AUGMENTS, default=None,
      help=f"augments of the cut-outs (latest/nrupdated; default {' '.join(DEFAULT_AUGMENTS)})")
    g("-sd", "--seed", metavar="N", type=seed_value, default=None,
      help="random seed (same seed, same frames on the CPU; default: drawn and printed)")

    g = p.add_argument_group("motion and zoom").add_argument
    g("--react", nargs="?", const="", default=None, metavar="KINDS",
      help="camera motion driven by the parts of the song: KIND[@PART][=VALUE],... with kinds "
           "zoom, shift, rotate (pulses on onsets), drift, spin (follow the level), depth, decay "
           "and parts drums, bass, harmonic, song (alone: zoom@drums=0.02,depth@bass=0.5,"
           "drift@harmonic=0.0005; see docs/motion.md)")
    g("-zvid", "--zoom_video", action="store_true", help="zoom/shift the picture as it evolves")
    g("-zs", "--zoom_start", metavar="N", type=RANGES["zoom_start"], default=0, help="zoom from this step on")
    g("-zse", "--zoom_save_every", metavar="N", type=RANGES["zoom_save_every"], default=10, help="zoom every N steps")
    g("-zsc", "--zoom_scale", metavar="F", type=RANGES["zoom_scale"], default=0.99,
      help="zoom factor per zoom (<1 zooms out)")
    g("-zsx", "--zoom_shift_x", metavar="PX", type=RANGES["zoom_shift_x"], default=0,
      help="shift right per zoom, pixels")
    g("-zsy", "--zoom_shift_y", metavar="PX", type=RANGES["zoom_shift_y"], default=0,
      help="shift down per zoom, pixels")

    g = p.add_argument_group("video and outputs").add_argument
    g("-o", "--output", metavar="FILE", default=None,
      help="preview picture; the video is written beside it as .mp4, chunks in its folder (a "
           "folder: <song name>.mp4 inside it; default: outputs/<song name>.mp4)")
    g("-s", "--size", nargs=2, type=RANGES["size"], default=[512, 512], metavar=("W", "H"),
      help="picture size, rounded down to whole VQGAN cells")
    g("--fps", metavar="FPS", type=RANGES["fps"], default=None, help="frames per second of the video (default: 30)")
    g("-ifps", "--input_video_fps", metavar="FPS", type=RANGES["input_video_fps"], default=None,
      help="the seed's name for --fps")
    g("-ofps", "--output_video_fps", metavar="FPS", type=RANGES["output_video_fps"], default=0,
      help="motion-interpolate the finished video to this fps (0: off)")
    g("-vl", "--video_length", metavar="S", type=RANGES["video_length"], default=10,
      help="chunk seconds when there is no beat/lyric to cut at")
    g("-se", "--save_every", metavar="N", type=RANGES["save_every"], default=50,
      help="refresh the preview picture every N steps (0: never)")
    g("--burn_lyrics", action="store_true",
      help="draw the lyrics into the frames (bottom centre) instead of a subtitle track")
    g("--draft", action="store_true",
      help="a quick check of timing and lyrics: a quarter of the pixels and a fifth of the "
           "steps, written to <output>_draft.mp4 with its own run folder")
    g("-vid", "--video", action="store_true", help="accepted for the seed's commands; a video is always made")

    g = p.add_argument_group("devices, sections and workers").add_argument
    g("-gid", "--gpu_id", metavar="IDS", type=gpu_list, default=(0,),
      help="CUDA GPU index, or a list (0,1,2,3): one worker per GPU")
    g("-cd", "--cuda_device", metavar="DEVICE", default=None, help="device, e.g. cuda:1, mps or cpu (overrides -gid)")
    g("--precision", metavar="P", choices=("auto", *PRECISIONS), default="auto",
      help="arithmetic of the loop (auto: bf16 where it is native and faster here, else fp32)")
    g("--compile", metavar="MODE", default=None, choices=("default", "reduce-overhead", "max-autotune-no-cudagraphs"),
      help="torch.compile the decoder and CLIP with this mode (minutes of compiling first)")
    g("-d", "--deterministic", action="store_true", help="cudnn deterministic mode")
    g("--sections", metavar="N", type=section_count, default=1,
      help="parts of the song cut at its structure that render in parallel: a number, or auto "
           "(about one per 30 s)")
    g("--warmup", metavar="N", type=RANGES["warmup"], default=50,
      help="unrendered steps that open each section after the first, so it starts on a picture")
    g("--workers", metavar="N", type=RANGES["workers"], default=None,
      help="sections rendered at once (default: one per -gid GPU, else 1)")
    g("--ray", default=None, metavar="ADDRESS",
      help="run the workers on Ray: $RAY_ADDRESS when set, else local for several workers; "
           "local (here, whatever $RAY_ADDRESS says), auto or a cluster address")
    g("--ray_device", default="auto", choices=("auto", "gpu", "cpu"),
      help="what a Ray cluster's workers render on: auto (GPUs while the cluster has any, else "
           "CPUs, looked at again as nodes come and go), gpu (wait for GPU nodes) or cpu")

    g = p.add_argument_group("run control").add_argument
    g("--plan", dest="plan_only", action="store_true",
      help="print the plan and its time estimate, then stop without rendering")
    g("--overwrite", action="store_true",
      help="replace a different earlier run in the run folder, and files beside -o it did not write")
    g("-q", "--quiet", action="store_true", help="no progress, log or summary lines")
    g("-v", "--verbose", action="store_true", help="a line per segment, and the loss every -se steps")
    g("--version", action="version", version=f"{PROG} {__version__}")


def get_parser(mode: str | None = None) -> argparse.ArgumentParser:
    """The parser of one command: generate.py ('beats'), generate_interpolate.py
    ('interpolate'), or the music2video command (None: --interpolate picks the mode)."""
    about = {"beats": "Music video cut on the song's beats, guided by its audio and lyrics.",
             "interpolate": "Music video cut at lyric lines: text leads each stretch, audio ends it.",
             None: "Turn a song into a music video, cut on its beats (or, with --interpolate, at "
                   "its lyric lines) and guided by its audio and lyrics."}
    prog = MODES.get(mode, PROG)
    seed = SEED_EXAMPLE[mode or "beats"]
    usage = f"{prog} SONG [SONG ...] [options]" if mode is None else f"{prog} -ap SONG [options]"
    p = _Parser(prog=prog, usage=usage, description=about[mode], formatter_class=_Help,
                epilog=EXAMPLES.format(prog=PROG, seed=seed))
    add_flags(p, mode)
    for action in p._actions:  # every number's range and every choice, in --help
        if isinstance(action.type, Range):
            action.help = f"{action.help}; {action.type}"
        elif action.choices and action.metavar:
            action.help = f"{action.help}: {', '.join(action.choices)}"
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
    for path in (args.output or "", *args.audio_prompt):
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
    """The song files of the command: files as given, folders listed (audio files, sorted)."""
    songs = []
    for item in items:
        if item.is_dir():
            found = sorted(f for f in item.iterdir()
                           if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                p.error(f"{item}: the folder holds no audio file ({', '.join(AUDIO_SUFFIXES)})")
            songs += found
        else:
            songs.append(item)
    stems = [s.stem for s in songs]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        p.error(f"several songs are named {twice[0]!r}; their videos would share a name, "
                "so rename one or render them separately")
    return tuple(songs)


def _check_mode(p: argparse.ArgumentParser, args, mode: str | None) -> str:
    """The mode the command runs in; a flag of the other mode is refused."""
    if mode is not None:
        return mode
    mode = "interpolate" if args.interpolate else "beats"
    if mode == "beats" and args.blend:
        p.error("--blend cross-fades the stretches of --interpolate; add --interpolate")
    if mode == "interpolate" and args.lyric_beats != 1:
        p.error("--lyric_beats sets how many beat segments a line guides; drop --interpolate")
    return mode


def parse_options(mode: str | None, argv=None) -> Options:
    """Parses and checks a command line: generate.py ('beats'), generate_interpolate.py
    ('interpolate') or music2video (None)."""
    p = get_parser(mode)
    args = p.parse_args(None if argv is None else [str(a) for a in argv])
    mode = _check_mode(p, args, mode)
    songs = [*args.songs, *(args.audio_prompt or [])]
    if not songs:
        p.error(f"give a song: {PROG} song.mp3 (or -ap song.mp3)")
    args.audio_prompt = songs
    _check_flags(p, args, mode)
    args.output_folder = args.output is not None and args.output.endswith(("/", os.sep))
    args.output = None if args.output is None else Path(args.output)
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
    """Warnings as one 'warning: ...' line on stderr that does not break the progress bar."""
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def main(mode: str | None = None, argv=None) -> int:
    """Runs a command line ('beats': generate.py, 'interpolate': generate_interpolate.py, None:
    music2video); user errors are one stderr line and a non-zero exit."""
    # Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning at barriers, which
    # made CPU steps several times slower on a machine shared with other programs (BENCHMARKS.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    prog = MODES.get(mode, PROG)

    def report(message: str) -> None:
        print(f"{prog}: error: {message}", file=sys.stderr)

    with warnings.catch_warnings(), terminate_as_interrupt():
        warnings.simplefilter("ignore")
        warnings.filterwarnings("default", module=r"music2video\.")
        warnings.showwarning = _show_warning
        opts = parse_options(mode, argv)
        from .driver.pipeline import generate

        try:
            failed = generate(opts, report)
        except UserError as err:
            report(str(err))
            return 1
        except KeyboardInterrupt:
            print(f"{prog}: interrupted; finished segments are kept: run the same command again "
                  "to resume", file=sys.stderr)
            return 130
    return 1 if failed else 0


def run() -> None:
    """The music2video console command (and python -m music2video)."""
    sys.exit(main(None))
