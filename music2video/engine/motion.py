"""Camera motion: --react's, driven by the parts of the song, and the seed's -zvid zoom.

--react names what moves the camera and what drives it: 'zoom@drums=0.02,depth@bass=0.5'.
The parts are song/audio.py's split_parts: the whole 'song', its 'drums' and 'harmonic' parts
(librosa's harmonic-percussive separation) and its 'bass' (the harmonic part below 150 Hz).
The kinds of motion:
- pulses, one on every onset of their part, as big as the onset is strong, fading over `decay`
  frames: zoom (a push forward that the picture keeps, as in the seed's zoom video), shift and
  rotate (jolts that glide back; rotations alternate, shifts turn by the golden angle);
- flows, following their part's smoothed level (0-1): drift (log-zoom per frame) and spin
  (degrees per second);
- depth: the share of the zoom pulses' size that follows its part's level (0: none, 1: all).
`react_track` turns the settings into a camera pose per video frame, cumulative from frame 0,
and the strength of the strongest pulse that starts on each frame (the cue):

    track row = (log_zoom, angle_deg, shift_x, shift_y, cue)
    shifts: fractions of the shorter side; cue: 0 where no pulse starts

The move between two frames is the similarity transform `relative(track, a, b)`, a row of the
same form (a pose row: its first four columns); `apply` moves a picture by it and `move_latent`
a VQGAN latent (decode, move, encode: the seed's zoom). `Camera` keeps the frame whose pose the
latent shows. Every frame written shows its own pose whatever the step rate: `Camera.show`
warps the step's picture from the latent's pose to the frame's. And the latent follows, so the
optimisation goes on from what is shown: before the step whose picture becomes frame f,
`Camera.move` re-encodes the latent at f's pose when a pulse started since its last move, and
otherwise once the picture would move min_pixels: each re-encode costs about half a step and
changes the picture a little by itself, so between pulses (a pulse's tail, the drift) it waits
for the next pulse, where the picture changes anyway, while `show` keeps the frames exact.
The optimiser keeps its state (z is replaced in place). The camera's frame is saved with the
run's state, so a resumed run moves exactly as an uninterrupted one. Nothing here draws random
numbers: the same song and settings give the same motion.

`Zoom` is the seed's -zvid motion: before every `every`-th step of each segment (counted from the
segment's start, as the seed counted), the picture is cropped about its centre and scaled back
with PIL, shifted with wrap-around, and encoded again, with a fresh optimiser.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..options import Drive, ReactSettings
from ..song import audio

GOLDEN_ANGLE = math.pi * (3 - math.sqrt(5))  # turn between successive shift pulses
TRACK_COLUMNS = ("log_zoom", "angle_deg", "shift_x", "shift_y", "cue")
MIN_PIXELS = 8.0  # between pulses, the latent follows once the picture would move this far
ONSET_PIXELS = 0.05  # when a pulse started, any move bigger than this is made

PULSES = ("zoom", "shift", "rotate")  # one on each onset of their part
FLOWS = ("drift", "spin")  # follow their part's level


def pulse_kernel(decay: float) -> np.ndarray:
    """A pulse's shape over the frames from its onset: 1 on the onset frame, easing out to 0."""
    n = np.arange(max(1, math.ceil(decay)))
    return (1 - n / max(decay, 1.0)) ** 2


def onset_hits(times: np.ndarray, strengths: np.ndarray, fps: float,
               frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Onsets as video frames round(time * fps), one per frame (the strongest), in range."""
    hits = np.round(np.asarray(times) * fps).astype(int)
    keep = (hits >= 0) & (hits < frames)
    best = np.zeros(frames)
    np.maximum.at(best, hits[keep], np.asarray(strengths)[keep])
    hits = np.unique(hits[keep])
    return hits, best[hits]


class _Song:
    """A song's parts, their onsets and levels, each worked out once when first asked for."""

    def __init__(self, samples: np.ndarray, sr: int, fps: float, frames: int, parts):
        self.sr, self.fps, self.frames = sr, fps, frames
        self.parts = audio.split_parts(samples, sr, sorted(set(parts) | {"song"}))
        self.scale = audio.onset_scale(samples, sr)
        self.peak = float(audio.smoothed_rms(samples, sr).max(initial=0.0))
        self._hits: dict = {}

    def hits(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        """The frames of the part's onsets and their strengths."""
        if part not in self._hits:
            scale = None if part == "song" else self.scale
            times, strengths = (audio.onsets(self.parts[part], self.sr, scale)
                                if self.scale is not None else (np.zeros(0), np.zeros(0)))
            self._hits[part] = onset_hits(times, strengths, self.fps, self.frames)
        return self._hits[part]

    def level(self, part: str) -> np.ndarray:
        """The part's level per frame (frames,) in [0, 1], on the song's loudness scale."""
        return audio.frame_levels(self.parts[part], self.sr, self.fps, self.frames, self.peak)


def react_track(samples: np.ndarray, sr: int, fps: float, frames: int,
                settings: ReactSettings) -> np.ndarray:
    """Camera track (frames, 5): pose (log_zoom, angle_deg, shift_x, shift_y) from frame 0,
    and the strength of the strongest pulse that starts on each frame (0 for none)."""
    track = np.zeros((max(frames, 0), len(TRACK_COLUMNS)))
    if frames <= 0 or not settings.active:
        return track
    song = _Song(samples, sr, fps, frames, [d.part for d in settings.drives])
    depth = np.ones(frames)  # share of each frame's zoom pulses that is made
    for drive in settings.of("depth"):
        depth = 1 - drive.value + drive.value * song.level(drive.part)
    speed = np.zeros(frames)  # log-zoom added on each frame
    spin = np.zeros(frames)  # degrees turned on each frame
    jolts = np.zeros((frames, 3))  # angle, shift x, shift y displacements
    kernel = pulse_kernel(settings.decay)
    for drive in settings.of(*PULSES):
        hits, strengths = song.hits(drive.part)
        _add_pulses(drive, hits, strengths, kernel, speed, jolts, depth)
        track[hits, 4] = np.maximum(track[hits, 4], strengths)
    for drive in settings.of(*FLOWS):
        flow = drive.value * song.level(drive.part)
        if drive.kind == "drift":
            speed += flow
        else:
            spin += flow / fps
    speed[0] = spin[0] = 0.0  # nothing is before frame 0 to move from
    track[:, 0] = np.cumsum(speed)
    track[:, 1] = jolts[:, 0] + np.cumsum(spin)
    track[:, 2:4] = jolts[:, 1:]
    return track


def _add_pulses(drive: Drive, hits: np.ndarray, strengths: np.ndarray, kernel: np.ndarray,
                speed: np.ndarray, jolts: np.ndarray, depth: np.ndarray) -> None:
    """Adds a pulse drive's pulses: zoom into the speed (scaled by depth), jolts into jolts."""
    frames = speed.size
    for k, (hit, strength) in enumerate(zip(hits, strengths)):
        span = kernel[: frames - hit] * strength
        if drive.kind == "zoom":
            speed[hit:hit + span.size] += drive.value * depth[hit] * span
        elif drive.kind == "rotate":
            jolts[hit:hit + span.size, 0] += drive.value * (-1) ** k * span
        else:
            turn = k * GOLDEN_ANGLE
            jolts[hit:hit + span.size, 1:] += span[:, None] * (
                drive.value * np.array([math.cos(turn), math.sin(turn)]))


def _similarity(row) -> tuple[float, float, np.ndarray]:
    """A pose row as (scale, angle in radians, shift)."""
    return math.exp(row[0]), math.radians(row[1]), np.asarray(row[2:4], dtype=float)


def _rotation(angle: float) -> np.ndarray:
    """2x2 rotation matrix (clockwise on screen, where y points down)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def relative(track: np.ndarray, a: int, b: int) -> np.ndarray:
    """The move (a pose row of 4) that takes the picture at frame a's pose to frame b's."""
    if a == b:
        return np.zeros(4)
    sa, ta, da = _similarity(track[a])
    sb, tb, db = _similarity(track[b])
    scale, angle = sb / sa, tb - ta
    shift = db - scale * _rotation(angle) @ da
    return np.array([math.log(scale), math.degrees(angle), *shift])


def displacement(move, width: int, height: int) -> float:
    """How far a move carries the picture's farthest-moving corner, in pixels."""
    scale, angle, shift = _similarity(move)
    side = min(width, height)
    corners = np.array([[x, y] for x in (-width / 2, width / 2) for y in (-height / 2, height / 2)])
    moved = corners @ (scale * _rotation(angle)).T + shift * side
    return float(np.linalg.norm(moved - corners, axis=1).max())


def affine_matrix(move, width: int, height: int) -> torch.Tensor:
    """The (1, 2, 3) pixel-space matrix of a move: zoom and turn about the centre, then shift."""
    scale, angle, shift = _similarity(move)
    linear = scale * _rotation(angle)
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    offset = centre + shift * min(width, height) - linear @ centre
    return torch.tensor(np.concatenate([linear, offset[:, None]], axis=1)[None],
                        dtype=torch.float32)


def apply(image: torch.Tensor, move) -> torch.Tensor:
    """A picture (1, 3, H, W) in [0, 1] moved by a pose row; edges reflect in, never black."""
    from kornia.geometry.transform import warp_affine

    height, width = image.shape[-2:]
    matrix = affine_matrix(move, width, height).to(image.device)
    moved = warp_affine(image.float(), matrix, (height, width), mode="bilinear",
                        padding_mode="reflection", align_corners=True)  # (1, 3, H, W)
    return moved.clamp(0, 1)


def move_latent(vqgan, z: torch.Tensor, move) -> torch.Tensor:
    """A latent (1, e, h, w) whose picture is z's moved by a pose row (decode, move, encode)."""
    with torch.no_grad():
        picture = vqgan.synth(z.detach().float())  # (1, 3, H, W)
        return vqgan.encode(apply(picture, move)).to(z.dtype)


class Camera:
    """Shows each written frame at its own pose, and moves the optimiser's latent after it."""

    def __init__(self, track: np.ndarray, width: int, height: int,
                 min_pixels: float = MIN_PIXELS):
        self.track, self.width, self.height = track, width, height
        self.min_pixels = min_pixels  # between pulses, smaller moves wait and add up
        self.frame = 0  # the frame whose pose the latent shows

    def move(self, vqgan, z: torch.Tensor, frame: int) -> bool:
        """Before the step whose picture becomes `frame`: moves z in place to that frame's pose.

        The optimiser keeps its state. Returns whether it moved: always when a pulse started
        since the last move, otherwise once the move would carry a pixel min_pixels (until
        then it waits, adding up, and `show` makes up the difference)."""
        frame = min(frame, len(self.track) - 1)
        if frame <= self.frame:
            return False
        move = relative(self.track, self.frame, frame)
        cue = self.track[self.frame + 1:frame + 1, 4].any()
        if displacement(move, self.width, self.height) < (ONSET_PIXELS if cue
                                                          else self.min_pixels):
            return False
        with torch.no_grad():
            z.copy_(move_latent(vqgan, z, move))
        self.frame = frame
        return True

    def show(self, image: torch.Tensor, frame: int) -> torch.Tensor:
        """The picture (1, 3, H, W) of the latent, as frame `frame` shows it: moved from the
        latent's pose to the frame's (the picture itself where they are the same)."""
        move = relative(self.track, self.frame, min(frame, len(self.track) - 1))
        return apply(image, move) if move.any() else image

    def state_dict(self) -> dict:
        """What a resumed run needs: the frame whose pose the saved latent shows."""
        return {"frame": self.frame}

    def load_state_dict(self, state: dict) -> None:
        """Restores state_dict()."""
        self.frame = int(state["frame"])


@dataclass(frozen=True)
class Zoom:
    """The seed's zoom motion (-zvid): before every `every`-th step of a segment from `start`."""

    start: int  # the first step of a segment that may zoom (the seed's -zs)
    every: int  # zoom before steps 0, every, 2 * every, ... of each segment (-zse)
    scale: float  # > 1 zooms in, < 1 out (-zsc)
    shift_x: int  # pixels right, wrapping round (-zsx)
    shift_y: int  # pixels down (-zsy)

    def due(self, step: int) -> bool:
        """Whether the zoom comes before a segment's step `step` (counted from 0 in each segment,
        as the seed counted: so every segment also zooms before its first step)."""
        return step >= self.start and step % self.every == 0

    def picture(self, image: torch.Tensor) -> torch.Tensor:
        """The seed's zoom of a picture (1, 3, H, W) in [0, 1], with its arithmetic: as uint8
        (truncated), cropped by PIL to a box of the size divided by `scale` about the centre
        (PIL rounds the box's corners to whole pixels; outside is black), resized back with
        Lanczos, then shifted with wrap-around."""
        from PIL import Image, ImageChops

        array = image[0].detach().float().mul(255).clamp(0, 255).cpu().numpy().astype(np.uint8)
        picture = Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)), "RGB")
        width, height = picture.size
        if self.scale != 1:
            half_w, half_h = width / (2 * self.scale), height / (2 * self.scale)
            box = (width / 2 - half_w, height / 2 - half_h, width / 2 + half_w, height / 2 + half_h)
            picture = picture.crop(box).resize((width, height), Image.LANCZOS)
        if self.shift_x or self.shift_y:
            picture = ImageChops.offset(picture, self.shift_x, self.shift_y)
        moved = torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)[None]  # (1, 3, H, W)
        return moved.to(image.device).float().div(255)

    def move(self, vqgan, z: torch.Tensor) -> torch.Tensor:
        """The latent (1, e, h, w) of z's picture zoomed and shifted."""
        with torch.no_grad():
            return vqgan.encode(self.picture(vqgan.synth(z.detach().float()))).to(z.dtype)
