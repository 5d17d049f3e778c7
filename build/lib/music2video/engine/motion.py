"""--react: camera motion driven by the song (zoom, rotation and shift pulses on its onsets).

The song's onsets (librosa's onset envelope, peak-picked, strengths normalised to 0-1) each
start a pulse on the frame round(onset_time * fps) that fades out over `decay` frames; its
loudness (smoothed RMS level) scales a slow base zoom, the drift. `react_track` turns this
into a camera pose per video frame, cumulative from frame 0, plus the onset cue:

    track row = (log_zoom, angle_deg, shift_x, shift_y, onset)
    shifts: fractions of the shorter side; onset: strength of an onset on this frame, else 0

- zoom pulses and drift are speeds: the picture keeps the zoom they add (a pulse is a push
  forward, as in the seed's zoom video);
- rotate and shift pulses are displacements: the camera jolts on the onset and glides back
  (rotations alternate in direction, shifts turn by the golden angle from onset to onset).

The move between two frames is the similarity transform `relative(track, a, b)`, a row of
the same form (a pose row: the first four columns); `apply` moves a picture by it and
`move_latent` moves a VQGAN latent (decode, move, encode: the seed's zoom). `Camera` keeps the
frame whose pose the latent shows; the renderer calls `Camera.move(vqgan, z, f)` before the
step whose picture becomes frame f. It moves on every onset frame, so a pulse lands on its
onset's frame; between onsets small moves (the tail of a pulse, the drift) wait until they
add up to min_pixels, because each move re-encodes the picture (which costs about half a
step and changes the picture a little by itself). The optimiser keeps its state (z is
replaced in place). The camera's frame is saved with the run's state (`state_dict`), so a
resumed run moves exactly as an uninterrupted one. Nothing here draws random numbers: the
same song and settings give the same motion.
"""

import math

import numpy as np
import torch

from ..options import ReactSettings
from ..song.audio import ONSET_HOP_SECONDS, check_mono, onsets

LOUDNESS_FLOOR_DB = -40.0  # drift stops at this level below the song's loudest moment
LOUDNESS_SMOOTH_SECONDS = 0.5  # the drift follows the loudness over this long, not each hit
GOLDEN_ANGLE = math.pi * (3 - math.sqrt(5))  # turn between successive shift pulses
TRACK_COLUMNS = ("log_zoom", "angle_deg", "shift_x", "shift_y", "onset")
MIN_PIXELS = 2.0  # between onsets, the camera moves once the picture would move this far
ONSET_PIXELS = 0.05  # on an onset frame, any move bigger than this is made

def frame_loudness(samples: np.ndarray, sr: int, fps: float, frames: int) -> np.ndarray:
    """Loudness per video frame in [0, 1]: smoothed RMS level, 0 at LOUDNESS_FLOOR_DB."""
    import librosa

    y = check_mono(samples)
    if frames <= 0 or y.size == 0:
        return np.zeros(max(frames, 0))
    hop = max(1, round(sr * ONSET_HOP_SECONDS))
    rms = librosa.feature.rms(y=y, frame_length=4 * hop, hop_length=hop)[0]  # (analysis frames,)
    width = max(1, round(LOUDNESS_SMOOTH_SECONDS * sr / hop))
    rms = np.sqrt(np.convolve(rms ** 2, np.ones(width) / width, mode="same"))
    peak = rms.max()
    if not peak > 0:
        return np.zeros(frames)
    db = 20 * np.log10(np.maximum(rms / peak, 1e-10))
    level = np.clip(1 - db / LOUDNESS_FLOOR_DB, 0.0, 1.0)
    times = np.arange(frames) / fps
    return np.interp(times, np.arange(level.size) * hop / sr, level)


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


def react_track(samples: np.ndarray, sr: int, fps: float, frames: int,
                settings: ReactSettings) -> np.ndarray:
    """Camera track (frames, 5): pose (log_zoom, angle_deg, shift_x, shift_y) from frame 0,
    and the strength of the onset on each frame (0 for none)."""
    track = np.zeros((max(frames, 0), len(TRACK_COLUMNS)))
    if frames <= 0 or not settings.active:
        return track
    times, strengths = onsets(samples, sr)
    kernel = pulse_kernel(settings.decay)
    hits, strengths = onset_hits(times, strengths, fps, frames)
    speed = np.zeros(frames)  # log-zoom added on each frame
    jolts = np.zeros((frames, 3))  # angle, shift x, shift y displacements
    for k, (hit, strength) in enumerate(zip(hits, strengths)):
        span = kernel[: frames - hit] * strength
        turn = k * GOLDEN_ANGLE
        direction = (settings.rotate * (-1) ** k, settings.shift * math.cos(turn),
                     settings.shift * math.sin(turn))
        speed[hit:hit + span.size] += settings.zoom * span
        jolts[hit:hit + span.size] += span[:, None] * np.array(direction)
    if settings.drift:
        speed += settings.drift * frame_loudness(samples, sr, fps, frames)
    speed[0] = 0.0  # nothing is before frame 0 to move from
    track[:, 0] = np.cumsum(speed)
    track[:, 1:4] = jolts
    track[hits, 4] = strengths
    return track


def _similarity(row) -> tuple[float, float, np.ndarray]:
    """A pose row as (scale, angle in radians, shift)."""
    return math.exp(row[0]), math.radians(row[1]), np.asarray(row[2:4], dtype=float)


def _rotation(angle: float) -> np.ndarray:
    """2x2 rotation matrix (clockwise on screen, where y points down)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def relative(track: np.ndarray, a: int, b: int) -> np.ndarray:
    """The move (a pose row of 4) that takes the picture at frame a's pose to frame b's."""
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
    """Moves the optimiser's latent along a react track, one written frame at a time."""

    def __init__(self, track: np.ndarray, width: int, height: int,
                 min_pixels: float = MIN_PIXELS):
        self.track, self.width, self.height = track, width, height
        self.min_pixels = min_pixels  # between onsets, smaller moves wait and add up
        self.frame = 0  # the frame whose pose the latent shows

    def move(self, vqgan, z: torch.Tensor, frame: int) -> bool:
        """Before the step whose picture becomes `frame`: moves z in place to that frame's pose.

        The optimiser keeps its state. Returns whether it moved: always when an onset fell
        since the last move, otherwise once the move would carry a pixel min_pixels (until
        then it waits, adding up)."""
        frame = min(frame, len(self.track) - 1)
        if frame <= self.frame:
            return False
        move = relative(self.track, self.frame, frame)
        onset = self.track[self.frame + 1:frame + 1, 4].any()
        if displacement(move, self.width, self.height) < (ONSET_PIXELS if onset
                                                          else self.min_pixels):
            return False
        with torch.no_grad():
            z.copy_(move_latent(vqgan, z, move))
        self.frame = frame
        return True

    def state_dict(self) -> dict:
        """What a resumed run needs: the frame whose pose the saved latent shows."""
        return {"frame": self.frame}

    def load_state_dict(self, state: dict) -> None:
        """Restores state_dict()."""
        self.frame = int(state["frame"])
