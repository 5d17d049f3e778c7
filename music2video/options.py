"""What a run was asked for, as plain data: the Options of a generate command, the fixed
choices its flags take, and the small grammars of its values (prompts, --react). No torch, no
numpy: the command line is parsed, and --help shown, without loading either."""

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import UserError

MODES = {"beats": "generate.py", "interpolate": "generate_interpolate.py"}
# The seed's -ips default for each script: generate.py's loudness rule, generate_interpolate.py's 100.
DEFAULT_IPS = {"beats": 0.0, "interpolate": 100.0}
CUT_METHODS = ("latest", "original", "updated", "nrupdated", "updatedpooling")
AUGMENTS = ("Ji", "Sh", "Gn", "Pe", "Ro", "Af", "Et", "Ts", "Cr", "Er", "Re")
DEFAULT_AUGMENTS = ("Af", "Pe", "Ji", "Er")
OPTIMISERS = ("Adam", "AdamW", "Adagrad", "Adamax", "DiffGrad", "AdamP", "RAdam", "RMSprop")
PRECISIONS = ("fp32", "bf16", "fp16")
# Settings that change how a run is shown, where it lives or who renders it, not what it renders:
# a resumed run may differ in these.
NOT_IDENTITY = {"output", "output_folder", "quiet", "verbose", "overwrite", "save_every",
                "cuda_device", "gpu_id", "deterministic", "video", "output_video_fps", "compile",
                "workers", "ray", "ray_device", "plan_only",
                # files: compared by content (song, lyrics, start picture) or by resolved path
                # and size (weights) in run_identity, not by how they were spelled
                "audio_prompt", "lyrics", "init_image", "seed", "checkpoints", "clip_model",
                "artist", "title", "require_lyrics",
                "vqgan_config", "vqgan_checkpoint", "wav2clip_checkpoint"}


def parse_prompt(prompt: str) -> tuple[str, float, float]:
    """Splits 'text:weight:stop'; trailing fields that are not numbers stay part of the text."""
    parts = prompt.rsplit(":", 2)
    numbers = []
    while len(parts) > 1 and len(numbers) < 2:
        try:
            numbers.insert(0, float(parts[-1]))
        except ValueError:
            break
        parts.pop()
    if len(numbers) == 2:
        weight, stop = numbers
    else:
        weight, stop = (numbers[0] if numbers else 1.0), float("-inf")
    return ":".join(parts).strip(), weight, stop


def split_prompts(text: str | None) -> list[str]:
    """The '|'-separated prompts of a flag, blanks dropped."""
    return [p.strip() for p in (text or "").split("|") if p.strip()]


PARTS = ("song", "drums", "harmonic", "bass")  # the parts of a song --react follows (song.audio)
# kind: (the part it follows unless named, its value when named without one, lowest, highest)
KINDS = {
    "zoom": ("drums", 0.02, -0.5, 0.5),  # log-zoom added on a full-strength onset's frame
    "shift": ("drums", 0.01, 0.0, 0.25),  # jolt, fraction of the shorter side
    "rotate": ("drums", 1.0, 0.0, 45.0),  # jolt, degrees
    "drift": ("harmonic", 0.0005, -0.1, 0.1),  # log-zoom per frame at full level
    "spin": ("harmonic", 1.0, -90.0, 90.0),  # degrees per second at full level
    "depth": ("bass", 0.5, 0.0, 1.0),  # share of the zoom pulses' size that follows the level
}
DECAY = (4.0, 1.0, 120.0)  # frames a pulse takes to fade: default, lowest, highest
DEFAULT_SPEC = "zoom@drums=0.02,depth@bass=0.5,drift@harmonic=0.0005"  # --react alone
EXAMPLE = ("e.g. --react zoom@drums=0.02,depth@bass=0.5,drift@harmonic=0.0005,decay=4 "
           "or --react zoom,rotate")


class ReactError(UserError, ValueError):
    """A --react setting that cannot be used; str() names it and the fix."""


@dataclass(frozen=True)
class Drive:
    """One --react item: a kind of motion, the part of the song that drives it, how strongly."""

    kind: str  # a KINDS name
    part: str  # an PARTS name
    value: float  # its strength (0: off)


@dataclass(frozen=True)
class ReactSettings:
    """What moves the camera, driven by what (no drives: no motion)."""

    drives: tuple[Drive, ...] = ()
    decay: float = DECAY[0]  # frames a pulse takes to fade out (1: the onset frame only)

    @property
    def active(self) -> bool:
        """Whether any motion is switched on (depth alone moves nothing)."""
        return any(d.value for d in self.drives if d.kind != "depth")

    def of(self, *kinds: str) -> list[Drive]:
        """The drives of these kinds that are on."""
        return [d for d in self.drives if d.kind in kinds and d.value]


def parse_react(spec: str | None) -> ReactSettings:
    """Settings from 'zoom@drums=0.02,rotate,decay=6'; '' or 'default' gives DEFAULT_SPEC.

    A kind named without a part follows its KINDS part; without a value it gets its KINDS
    value. Each kind may follow several parts (their motions add), each part once."""
    spec = (spec or "").strip()
    items = DEFAULT_SPEC if spec.lower() in ("", "default") else spec
    drives, decay, seen = [], DECAY[0], set()
    for item in items.split(","):
        head, sep, text = (part.strip() for part in item.strip().partition("="))
        kind, at, part = (word.strip() for word in head.partition("@"))
        if kind not in KINDS and kind != "decay":
            what = f"unknown name {kind!r}" if kind else "an empty item"
            raise ReactError(f"--react {spec}: {what}; use names from "
                             f"{', '.join([*KINDS, 'decay'])}, {EXAMPLE}")
        if kind == "decay" and at:
            raise ReactError(f"--react {spec}: decay follows no part; give decay=FRAMES, {EXAMPLE}")
        part = part if at else KINDS.get(kind, ("",))[0]
        if at and part not in PARTS:
            raise ReactError(f"--react {spec}: unknown part {part!r} in {head}; the parts are "
                             f"{', '.join(PARTS)}, {EXAMPLE}")
        name = f"{kind}@{part}" if kind != "decay" else kind
        if name in seen or (kind == "depth" and any(d.kind == "depth" for d in drives)):
            raise ReactError(f"--react {spec}: {name} is given twice; give it once, {EXAMPLE}")
        seen.add(name)
        value = _react_value(spec, kind, text) if sep else (
            DECAY[0] if kind == "decay" else KINDS[kind][1])
        if kind == "decay":
            decay = value
        else:
            drives.append(Drive(kind, part, value))
    return ReactSettings(tuple(drives), decay)


def _react_value(spec: str, kind: str, text: str) -> float:
    """One --react value, checked against its kind's range."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    low, high = DECAY[1:] if kind == "decay" else KINDS[kind][2:]
    if not (math.isfinite(value) and low <= value <= high):
        raise ReactError(f"--react {spec}: {kind}={text} is not a number from {low:g} to "
                         f"{high:g}; {EXAMPLE} (0 switches a kind off)")
    return value


@dataclass(frozen=True)
class Options:
    """Everything a run needs, checked; field names follow the seed's argparse dests."""

    mode: str  # 'beats' (generate.py) or 'interpolate' (generate_interpolate.py)
    audio_prompt: tuple[Path, ...]  # the songs (files; folders already listed)
    lyrics: Path | None  # timestamped lyrics (csv, lrc, srt); a folder of them for several songs
    output: Path | None  # the seed's -o PNG (video: its .mp4 sibling; run folder: its stem);
    # None: named after the song in outputs/
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
    noise_prompt_weights: tuple[float, ...]  # one weight per noise prompt seed
    learning_rate: float  # the optimiser's step size
    cut_method: str  # how cut-outs are taken (CUT_METHODS)
    num_cuts: int  # cut-outs per step
    cut_power: float  # cut size power (crop methods)
    augments: tuple[str, ...]  # kornia augments of the cut-outs (AUGMENTS)
    seed: int | None  # random seed; None: drawn, then kept in the manifest
    optimiser: str  # OPTIMISERS
    video: bool  # the seed's -vid; a video is always made
    zoom_video: bool  # zoom/shift motion
    zoom_start: int  # -zvid: first step that zooms
    zoom_save_every: int  # -zvid: zoom every N steps
    zoom_scale: float  # -zvid: scale per zoom (<1 zooms out)
    zoom_shift_x: int  # -zvid: pixels right per zoom
    zoom_shift_y: int  # -zvid: pixels down per zoom
    change_prompt_every: int  # -cpe: cycle the '^' phrases of -p every N steps
    video_length: float  # chunk seconds when there are no beats (or no lyrics, interpolate)
    output_video_fps: float  # motion-interpolate the final video to this fps (0: off)
    fps: float  # frames per second of the rendered video
    deterministic: bool  # cudnn deterministic mode
    cuda_device: str | None  # one device (cuda:1, mps, cpu); overrides gpu_id
    gpu_id: tuple[int, ...]  # CUDA GPU indices; several: one worker each
    audio_sampling_freq: int  # sample rate for beats and Wav2CLIP
    lyric_beats: int  # beat segments each lyric line guides (beats mode)
    blend: bool  # cross-fade text into audio instead of halves (interpolate mode)
    precision: str  # 'auto', 'fp32', 'bf16', 'fp16'
    compile: str | None  # torch.compile mode for the decoder and CLIP, or None
    sections: str | int  # 'auto' or a number: parts of the song that render in parallel
    warmup: int  # unrendered steps that open each section after the first
    artist: str | None  # -lyr auto: the song's artist (else its tags)
    title: str | None  # -lyr auto: the song's title (else its tags)
    require_lyrics: bool  # -lyr auto: stop when no synced lyrics are found
    react: ReactSettings | None  # --react's settings, or None
    burn_lyrics: bool  # draw the lyrics into the frames instead of a subtitle track
    draft: bool  # a quarter of the pixels and a fifth of the steps, to *_draft.mp4
    workers: int | None  # parallel workers (None: one per -gid GPU, else 1)
    ray: str | None  # None: in this process for one worker, else 'local', 'auto' or an address
    ray_device: str  # a cluster's workers: 'auto' (GPUs while it has any, else CPUs), 'gpu', 'cpu'
    overwrite: bool  # replace an earlier, different run and files the run did not write
    quiet: bool  # no progress, log or summary lines
    verbose: bool  # a line per segment and the loss every -se steps
    plan_only: bool  # --plan: print the plan and its estimate, render nothing

    def identity(self) -> dict:
        """The settings a resumed run must share with the run it continues."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()
                if k not in NOT_IDENTITY}
