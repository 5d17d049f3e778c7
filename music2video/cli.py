"""Command lines of generate.py and generate_interpolate.py: the seed's flags, checked up front."""

import argparse
import dataclasses
import random
import sys
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .guidance import AUGMENTS, CUT_METHODS, DEFAULT_AUGMENTS
from .optimise import OPTIMISERS, PRECISIONS

MODES = {"beats": "generate.py", "interpolate": "generate_interpolate.py"}
# Settings that change how a run is shown or where it lives, not what it renders: a resumed
# run may differ in these.
NOT_IDENTITY = {"output", "quiet", "overwrite", "save_every", "cuda_device", "gpu_id",
                "deterministic", "video", "output_video_fps", "compile",
                # files: compared by content (song, lyrics, start picture) or by resolved path
                # and size (weights) in run_identity, not by how they were spelled
                "audio_prompt", "lyrics", "init_image", "seed", "checkpoints", "clip_model",
                "vqgan_config", "vqgan_checkpoint", "wav2clip_checkpoint"}


class Fatal(Exception):
    """A problem the user can fix; printed as one line, exit code 1."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


@dataclass(frozen=True)
class Options:
    """Everything a run needs, checked; field names follow the seed's argparse dests."""

    mode: str  # 'beats' (generate.py) or 'interpolate' (generate_interpolate.py)
    audio_prompt: Path  # the song
    lyrics: Path | None  # timestamped lyrics (csv, lrc, srt)
    output: Path  # the seed's -o PNG; the video is its .mp4 sibling, the run folder its stem
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
    gpu_id: int
    audio_sampling_freq: int
    lyric_beats: int  # beat segments each lyric line guides (beats mode)
    blend: bool  # cross-fade text into audio instead of halves (interpolate mode)
    precision: str  # 'auto', 'fp32', 'bf16', 'fp16'
    compile: str | None  # torch.compile mode for the decoder and CLIP, or None
    overwrite: bool
    quiet: bool

    @property
    def video_path(self) -> Path:
        """Where the finished video goes."""
        return self.output.with_suffix(".mp4")

    @property
    def preview(self) -> Path:
        """Where -se writes its preview picture."""
        return self.output if self.output.suffix.lower() == ".png" else self.output.with_suffix(".png")

    @property
    def run_dir(self) -> Path:
        """The run folder beside the output: chunks, states, manifest."""
        return self.output.with_suffix("")

    def identity(self) -> dict:
        """The settings a resumed run must share with the run it continues."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()
                if k not in NOT_IDENTITY}


def add_seed_flags(p: argparse.ArgumentParser) -> None:
    """The seed's flags, shared by both generate scripts."""
    a = p.add_argument
    a("-ap", "--audio_prompt", type=Path, required=True, help="the song (any format ffmpeg reads)")
    a("-lyr", "--lyrics", type=Path, default=None, help="timestamped lyrics: .csv, .lrc or .srt")
    a("-o", "--output", type=Path, default=Path("outputs/output.png"),
      help="preview picture; the video is written beside it as .mp4, chunks in its folder")
    a("-p", "--prompts", default=None, help="style prompts for the whole video, 'text:weight:stop|...'")
    a("-ip", "--image_prompts", default=None, help="style images, 'path:weight|...'")
    a("-i", "--iterations", type=int, default=None, help="total steps for the song (instead of -ips)")
    a("-ips", "--iterations_per_second", type=float, default=0,
      help="steps per second of song; 0: 10-120 by loudness")
    a("-se", "--save_every", type=int, default=50, help="preview picture and loss every N steps")
    a("-s", "--size", nargs=2, type=int, default=[512, 512], metavar=("W", "H"), help="picture size")
    a("-ii", "--init_image", type=Path, default=None, help="start from this picture")
    a("-in", "--init_noise", choices=["pixels", "gradient"], default=None, help="start from noise")
    a("-iw", "--init_weight", type=float, default=0.0,
      help="pull of the latent towards zero (the seed's rule), fading within each segment")
    a("-m", "--clip_model", default="ViT-B/32", help="CLIP model name or checkpoint path")
    a("-conf", "--vqgan_config", type=Path, default=None,
      help="VQGAN yaml (default: checkpoints/vqgan_imagenet_f16_16384.yaml)")
    a("-ckpt", "--vqgan_checkpoint", type=Path, default=None,
      help="VQGAN ckpt (default: checkpoints/vqgan_imagenet_f16_16384.ckpt)")
    a("--wav2clip_checkpoint", type=Path, default=None, help="Wav2CLIP weights (default: checkpoints/Wav2CLIP.pt)")
    a("--checkpoints", type=Path, default=None, help="weights folder (default: $MUSIC2VIDEO_CHECKPOINTS or ./checkpoints)")
    a("-nps", "--noise_prompt_seeds", nargs="*", type=int, default=[], help="noise prompt seeds")
    a("-npw", "--noise_prompt_weights", nargs="*", type=float, default=[], help="noise prompt weights")
    a("-lr", "--learning_rate", type=float, default=0.1, help="learning rate")
    a("-cutm", "--cut_method", choices=CUT_METHODS, default="latest", help="cut-out method")
    a("-cuts", "--num_cuts", type=int, default=32, help="cut-outs per step")
    a("-cutp", "--cut_power", type=float, default=1.0, help="cut size power (crop methods)")
    a("-aug", "--augments", nargs="+", action="append", choices=AUGMENTS, default=None,
      help=f"augments for the latest/nrupdated methods (default: {' '.join(DEFAULT_AUGMENTS)})")
    a("-sd", "--seed", type=int, default=None, help="random seed (same seed, same frames on the CPU)")
    a("-opt", "--optimiser", choices=OPTIMISERS, default="Adam", help="optimiser")
    a("-vid", "--video", action="store_true", help="accepted for the seed's commands; a video is always made")
    a("-zvid", "--zoom_video", action="store_true", help="zoom/shift the picture as it evolves")
    a("-zs", "--zoom_start", type=int, default=0, help="zoom from this step on")
    a("-zse", "--zoom_save_every", type=int, default=10, help="zoom every N steps")
    a("-zsc", "--zoom_scale", type=float, default=0.99, help="zoom factor per zoom (<1 zooms out)")
    a("-zsx", "--zoom_shift_x", type=int, default=0, help="shift right per zoom, pixels")
    a("-zsy", "--zoom_shift_y", type=int, default=0, help="shift down per zoom, pixels")
    a("-cpe", "--change_prompt_every", type=int, default=0, help="cycle the '^' phrases of -p every N steps")
    a("-vl", "--video_length", type=float, default=10, help="chunk seconds when there is no beat/lyric to cut at")
    a("-ofps", "--output_video_fps", type=float, default=0, help="motion-interpolate the video to this fps")
    a("-ifps", "--input_video_fps", type=float, default=None, help="rendered fps before -ofps (same as --fps)")
    a("--fps", type=float, default=None, help="frames per second of the rendered video (default 30)")
    a("-d", "--deterministic", action="store_true", help="cudnn deterministic mode")
    a("-vsd", "--video_style_dir", default=None, help="not supported: styles a video's frames, not a song")
    a("-cd", "--cuda_device", default=None, help="device, e.g. cuda:1, mps or cpu (overrides -gid)")
    a("-gid", "--gpu_id", type=int, default=0, help="CUDA GPU index")
    a("-sf", "--audio_sampling_freq", type=int, default=16000, help="sample rate for the audio embeddings")
    a("--precision", choices=("auto", *PRECISIONS), default="auto",
      help="arithmetic of the loop; auto: bf16 where the hardware computes it natively "
           "(recent GPUs, CPUs with avx512_bf16/AMX), fp32 elsewhere")
    a("--compile", default=None, choices=("default", "reduce-overhead", "max-autotune-no-cudagraphs"),
      help="torch.compile the decoder and CLIP with this mode (minutes of compiling first)")
    a("--overwrite", action="store_true", help="replace a different earlier run in the run folder")
    a("-q", "--quiet", action="store_true", help="no progress bar or log lines")


def get_parser(mode: str) -> argparse.ArgumentParser:
    """The parser of one generate script."""
    about = {"beats": "Music video cut on the song's beats, guided by its audio and lyrics.",
             "interpolate": "Music video cut at lyric lines: text leads each stretch, audio ends it."}
    p = _Parser(prog=MODES[mode], description=about[mode],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_seed_flags(p)
    if mode == "beats":
        p.add_argument("--lyric_beats", type=int, default=1, help="beat segments each lyric guides")
    else:
        p.add_argument("--blend", action="store_true", help="cross-fade text into audio over each stretch")
    return p


def _check_flags(p: argparse.ArgumentParser, args) -> None:
    """Rejects impossible or conflicting flags with parser.error."""
    positive = {"-cuts": args.num_cuts, "-lr": args.learning_rate, "-zse": args.zoom_save_every,
                "-zsc": args.zoom_scale, "-vl": args.video_length, "-sf": args.audio_sampling_freq,
                "-cutp": args.cut_power, "-s": min(args.size)}
    for flag, value in positive.items():
        if not value > 0:
            p.error(f"{flag} must be greater than 0, got {value}")
    for flag, value in {"-ips": args.iterations_per_second, "-se": args.save_every,
                        "-zs": args.zoom_start, "-cpe": args.change_prompt_every,
                        "-ofps": args.output_video_fps}.items():
        if value < 0:
            p.error(f"{flag} cannot be negative, got {value}")
    if args.video_style_dir:
        p.error("-vsd (styling a folder of video frames) is not supported: this tool renders a "
                "song; drop -vsd")
    if args.iterations is not None and (args.iterations < 1 or args.iterations_per_second):
        p.error("-i takes a positive total and cannot be combined with -ips; give one of them")
    if len(args.noise_prompt_seeds) != len(args.noise_prompt_weights):
        p.error("-nps and -npw need one weight per seed")
    if args.change_prompt_every and "^" not in (args.prompts or ""):
        p.error("-cpe cycles the '^'-separated phrases of -p; give -p 'a^b^c'")
    if args.init_image and args.init_noise:
        p.error("-ii and -in both set the start picture; give one of them")
    if getattr(args, "lyric_beats", 1) < 1:
        p.error("--lyric_beats must be at least 1")
    zoom = (args.zoom_start, args.zoom_save_every, args.zoom_scale, args.zoom_shift_x,
            args.zoom_shift_y)
    if not args.zoom_video and zoom != (0, 10, 0.99, 0, 0):
        warnings.warn("the zoom settings (-zs -zse -zsc -zsx -zsy) only act with -zvid")
    _check_fps(p, args)


def _check_fps(p: argparse.ArgumentParser, args) -> None:
    """Resolves --fps and its seed alias -ifps, and checks -ofps against them."""
    if args.fps is not None and args.input_video_fps is not None and args.fps != args.input_video_fps:
        p.error("--fps and -ifps both set the rendered frame rate; give one of them")
    args.fps = args.fps or args.input_video_fps or 30.0
    if args.fps <= 0:
        p.error(f"--fps must be greater than 0, got {args.fps}")
    if args.output_video_fps and args.output_video_fps <= args.fps:
        p.error(f"-ofps ({args.output_video_fps:g}) must be above the rendered --fps ({args.fps:g})")


def parse_options(mode: str, argv=None) -> Options:
    """Parses and checks a generate command line."""
    p = get_parser(mode)
    args = p.parse_args(argv)
    _check_flags(p, args)
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


@dataclass(frozen=True)
class Song:
    """The decoded song."""

    path: Path
    samples: "np.ndarray"  # (n,) mono float32 at sr
    sr: int
    duration: float  # seconds


def read_song(opts: Options) -> Song:
    """Decodes the song for the embeddings and beat tracking."""
    from .audio import load_audio

    if opts.audio_sampling_freq != 16000:
        warnings.warn(f"Wav2CLIP was trained on 16 kHz audio; -sf {opts.audio_sampling_freq} "
                      "gives it audio it has never heard")
    samples = load_audio(opts.audio_prompt, opts.audio_sampling_freq)
    return Song(opts.audio_prompt, samples, opts.audio_sampling_freq,
                len(samples) / opts.audio_sampling_freq)


def read_lyrics(opts: Options, duration: float) -> list:
    """The lyric lines inside the song, or [] without -lyr."""
    from .lyrics import drop_after, load_lyrics

    if opts.lyrics is None:
        return []
    return drop_after(load_lyrics(opts.lyrics), duration, opts.lyrics)


def steps_per_second(opts: Options, duration: float) -> float:
    """-ips, or -i spread over the song; 0 means loudness-driven."""
    if opts.iterations:
        return opts.iterations / duration
    return opts.iterations_per_second


def build_schedule(opts: Options, song: Song, lyrics: list) -> list:
    """The segments of the song: the only thing the two modes do differently."""
    from . import audio, schedule

    loud = audio.loudness(song.samples, song.sr)
    ips = steps_per_second(opts, song.duration)
    if opts.mode == "interpolate":
        return schedule.interpolate_schedule(lyrics, song.duration, opts.fps, ips, loud,
                                             opts.blend, opts.video_length)
    beats = audio.beat_times(song.samples, song.sr)
    if len(beats):
        bounds = schedule.beat_bounds(beats, song.duration)
    else:
        warnings.warn(f"no beat found in {song.path}; cutting it into {opts.video_length:g}-second "
                      "chunks (-vl)")
        bounds = schedule.fixed_bounds(song.duration, opts.video_length)
    return schedule.beat_schedule(bounds, lyrics, opts.fps, ips, loud, opts.lyric_beats)


def resolve_precision(opts: Options, device) -> Options:
    """Options with 'auto' precision made concrete for the device."""
    from .optimise import default_precision

    if opts.precision != "auto":
        return opts
    return dataclasses.replace(opts, precision=default_precision(device))


def check_images(opts: Options) -> None:
    """The start picture and the image prompts must be pictures PIL can read."""
    from PIL import Image

    from .guidance import parse_prompt, split_prompts

    paths = [parse_prompt(item)[0] for item in split_prompts(opts.image_prompts)]
    for path in paths + ([opts.init_image] if opts.init_image else []):
        try:
            with Image.open(path) as img:
                img.verify()
        except (OSError, ValueError) as err:
            raise Fatal(f"cannot read image {path} ({type(err).__name__}); give a PNG or JPEG "
                        "file") from None


def run_identity(opts: Options, paths: dict) -> dict:
    """What a resumed run must share with the run it continues: settings, and files by content."""
    weights = {key: [str(Path(path).resolve()), Path(path).stat().st_size]
               for key, path in sorted(paths.items())}
    return {**opts.identity(), "audio": _digest(opts.audio_prompt), "lyrics": _digest(opts.lyrics),
            "init_image": _digest(opts.init_image), "weights": weights,
            **({"seed": opts.seed} if opts.seed is not None else {})}


def generate(opts: Options) -> Path:
    """Checks the inputs, plans the song, loads the models and renders the video."""
    import torch

    from .models import pick_device
    from .run import Engine, RunFolder, load_models, picture_size, resolve_weights, say
    from .video import join

    song = read_song(opts)
    lyrics = read_lyrics(opts, song.duration)
    segments = build_schedule(opts, song, lyrics)
    check_images(opts)
    device = pick_device(opts.cuda_device, opts.gpu_id)
    opts = resolve_precision(opts, device)
    torch.backends.cudnn.deterministic = opts.deterministic
    torch.backends.cudnn.benchmark = not opts.deterministic
    paths = resolve_weights(opts)
    size = picture_size(opts, paths["config"])
    folder = RunFolder(opts.run_dir)
    seed = opts.seed if opts.seed is not None else random.randrange(2**31)
    info = {"audio_path": str(song.path.resolve()), "video": str(opts.video_path.resolve()),
            "fps": opts.fps, "output_video_fps": opts.output_video_fps}
    manifest = folder.start(run_identity(opts, paths), segments, opts.overwrite, seed, info)
    steps = sum(s.iterations for s in segments)
    say(opts.quiet, f"{song.path}: {song.duration:.2f} s, {len(segments)} segments, {steps} "
                    f"steps, {round(song.duration * opts.fps)} frames at {opts.fps:g} fps; "
                    f"device {device}, {opts.precision}, seed {manifest['seed']}")
    say(opts.quiet, f"video will be written to {opts.video_path} (chunks in {folder.path}/)")
    models = load_models(opts, paths, size, device, manifest["seed"])
    Engine(opts, song, models, folder, manifest, segments).run()
    join(folder.finished_chunks(manifest), song.path, opts.video_path, opts.output_video_fps,
         video_seconds=segments[-1].frame_end / opts.fps)
    say(opts.quiet, f"done: {opts.video_path}")
    return opts.video_path


def _digest(path: Path | None) -> str | None:
    """SHA-256 of an optional file."""
    from .download import sha256sum

    return sha256sum(path) if path else None


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one 'warning: ...' line that does not break the progress bar."""
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def main(mode: str, argv=None) -> int:
    """Runs a generate command line; user errors are one stderr line and a non-zero exit."""
    from .audio import AudioError
    from .checkpoint import CheckpointError
    from .download import DownloadError
    from .lyrics import LyricsError
    from .models import ModelError
    from .run import RunError, RunInterrupted
    from .video import VideoError

    opts = parse_options(mode, argv)
    expected = (Fatal, AudioError, LyricsError, ModelError, CheckpointError, DownloadError,
                RunError, VideoError)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.filterwarnings("default", module=r"music2video\.")
        warnings.showwarning = _show_warning
        try:
            generate(opts)
        except expected as err:
            print(f"{MODES[mode]}: error: {err}", file=sys.stderr)
            return 1
        except RunInterrupted as err:
            print(f"{MODES[mode]}: {err}", file=sys.stderr)
            return 130
        except KeyboardInterrupt:
            print(f"{MODES[mode]}: interrupted; run the same command again to resume",
                  file=sys.stderr)
            return 130
    return 0
