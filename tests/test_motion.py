"""--react: settings, the camera track from the song, moving pictures and latents, the camera."""

import math

import numpy as np
import pytest
import torch

from music2video import options
from music2video.engine import motion, optimise
from music2video.engine.guidance import MakeCutouts, Perceptor
from music2video.models import networks
from music2video.output import sync
from music2video.song import audio
from music2video.song.segments import frame_sources
from music2video.testing import demo

SR = 16000
FPS = 30.0


# Settings


def test_react_alone_gives_the_default_set():
    for spec in ("", None, "default"):
        s = options.parse_react(spec)
        assert (s.zoom, s.drift) == (options.DEFAULTS["zoom"], options.DEFAULTS["drift"])
        assert (s.rotate, s.shift) == (0, 0) and s.decay == options.DEFAULTS["decay"]
        assert s.active


def test_named_kinds_get_their_defaults_and_the_rest_zero():
    s = options.parse_react("zoom, rotate")
    assert s == options.ReactSettings(zoom=options.DEFAULTS["zoom"], rotate=options.DEFAULTS["rotate"])
    s = options.parse_react("zoom=0.04,rotate=2,shift=0.02,drift=-0.001,decay=6")
    assert (s.zoom, s.rotate, s.shift, s.drift, s.decay) == (0.04, 2, 0.02, -0.001, 6)
    assert not options.parse_react("zoom=0").active


@pytest.mark.parametrize("spec, words", [
    ("zom", "unknown name 'zom'"), ("zoom,,rotate", "an empty item"),
    ("zoom=abc", "zoom=abc is not a number"), ("zoom=1", "from -0.5 to 0.5"),
    ("rotate=-1", "from 0 to 45"), ("decay=0", "from 1 to 120"), ("shift=nan", "is not a number"),
    ("zoom,zoom=0.1", "zoom is given twice"),
])
def test_bad_react_settings_name_the_fix(spec, words):
    with pytest.raises(ValueError) as err:
        options.parse_react(spec)
    assert words in str(err.value) and "e.g. --react" in str(err.value)
    assert "\n" not in str(err.value)


# The track


@pytest.fixture(scope="module")
def clicks():
    """A 4-second click track at 100 BPM from 0.37 s, and its click frames at 30 fps."""
    y = demo.click_track(4.0, 100, SR, start=0.37)
    return y, np.round(demo.beat_grid(4.0, 100, 0.37) * FPS).astype(int)


def test_onsets_of_a_click_track(clicks):
    y, _ = clicks
    times, strengths = audio.onsets(y, SR)
    truth = demo.beat_grid(4.0, 100, 0.37)
    assert times.shape == truth.shape
    assert np.abs(times - truth).max() <= 0.011  # within about two analysis steps
    assert strengths.max() == 1.0 and strengths.min() > 0.3  # clicks of one loudness
    assert audio.onsets(np.zeros(SR, np.float32), SR)[0].size == 0


def test_zoom_pulses_start_on_the_onset_frame_and_fade_over_decay_frames(clicks):
    y, frames_of_clicks = clicks
    settings = options.ReactSettings(zoom=0.05, decay=3)
    track = motion.react_track(y, SR, FPS, 120, settings)
    assert track.shape == (120, 5) and not track[:, 1:4].any()
    speed = np.diff(track[:, 0], prepend=0.0)  # log-zoom added on each frame
    _, strengths = audio.onsets(y, SR)
    assert np.flatnonzero(track[:, 4]).tolist() == frames_of_clicks.tolist()
    assert track[frames_of_clicks, 4] == pytest.approx(strengths)
    kernel = motion.pulse_kernel(3)
    assert kernel.tolist() == pytest.approx([1, 4 / 9, 1 / 9])
    expected = np.zeros(120)
    for hit, strength in zip(frames_of_clicks, strengths):
        expected[hit:hit + 3] += (0.05 * strength * kernel)[:120 - hit]
    assert speed == pytest.approx(expected)
    assert (np.flatnonzero(speed[:frames_of_clicks[0] + 1]) == frames_of_clicks[0]).all()


def test_rotate_and_shift_jolt_on_onsets_and_come_back(clicks):
    y, frames_of_clicks = clicks
    track = motion.react_track(y, SR, FPS, 120, options.ReactSettings(rotate=2, shift=0.02, decay=4))
    assert not track[:, 0].any()
    first, second = frames_of_clicks[:2]
    assert track[first, 1] * track[second, 1] < 0  # rotations alternate
    assert abs(track[first, 1]) == pytest.approx(2 * audio.onsets(y, SR)[1][0])
    assert np.hypot(*track[first, 2:4]) == pytest.approx(abs(track[first, 1]) / 2 * 0.02)
    assert not track[first + 4:second, :4].any() and not track[:first].any()  # back at rest
    moves = np.abs(np.diff(track[:, 1], prepend=0.0))
    assert moves[first] > moves[first + 1] > 0  # the biggest move is on the onset frame


def test_drift_follows_loudness_and_track_is_deterministic():
    y = np.concatenate([np.zeros(SR), demo.tonal_song(2.0, 120, SR), np.zeros(SR)])
    settings = options.ReactSettings(drift=0.01)
    track = motion.react_track(y, SR, FPS, 120, settings)
    speed = np.diff(track[:, 0], prepend=0.0)
    assert speed[45:75].min() > 0.009 and speed[:10].max() < 0.001 and speed[-5:].max() < 0.001
    assert np.array_equal(track, motion.react_track(y, SR, FPS, 120, settings))
    assert not motion.react_track(y, SR, FPS, 120, options.ReactSettings()).any()


# Moves


def _matrix(move, w=64, h=48) -> np.ndarray:
    """A move's pixel-space matrix as 3x3."""
    return np.vstack([motion.affine_matrix(move, w, h)[0].numpy(), [0, 0, 1]])


def test_relative_moves_compose():
    track = np.array([[0.0, 0, 0, 0], [0.1, 5, 0.02, -0.01], [0.05, -3, 0.03, 0.04]])
    assert motion.relative(track, 1, 1) == pytest.approx([0, 0, 0, 0], abs=1e-12)
    whole = _matrix(motion.relative(track, 0, 2))
    parts = _matrix(motion.relative(track, 1, 2)) @ _matrix(motion.relative(track, 0, 1))
    assert whole == pytest.approx(parts, abs=1e-5)
    assert _matrix(motion.relative(track, 0, 2)) == pytest.approx(_matrix(track[2]), abs=1e-5)


def test_displacement_is_the_farthest_corner_move():
    corner = 50 * 2 ** 0.5
    assert motion.displacement([math.log(1.1), 0, 0, 0], 100, 100) == pytest.approx(0.1 * corner)
    assert motion.displacement([0, 0, 0.01, 0], 200, 100) == pytest.approx(1.0)
    assert motion.displacement([0, 0, 0, 0], 100, 100) == 0


def marked(size: int = 33) -> torch.Tensor:
    """A grey picture (1, 3, size, size) with one white pixel right of the centre."""
    image = torch.full((1, 3, size, size), 0.5)
    image[0, :, size // 2, size // 2 + 8] = 1.0
    return image


def test_apply_moves_pictures_about_the_centre():
    image = marked()
    assert motion.apply(image, [0, 0, 0, 0]) == pytest.approx(image, abs=1e-6)
    spot = lambda picture: divmod(int(picture[0, 0].argmax()), picture.shape[-1])
    assert spot(motion.apply(image, [math.log(2), 0, 0, 0])) == (16, 32)  # 8 px out becomes 16
    assert spot(motion.apply(image, [0, 90, 0, 0])) == (24, 16)  # turned clockwise on screen
    assert spot(motion.apply(image, [0, 0, 3 / 33, -2 / 33])) == (14, 27)  # right 3, up 2


def test_apply_brings_no_black_edges_in():
    white = torch.ones(1, 3, 32, 48)
    for move in ([math.log(0.7), 0, 0, 0], [0, 30, 0, 0], [0, 0, 0.2, -0.1]):
        moved = motion.apply(white, move)
        assert moved.dtype == torch.float32 and moved.shape == white.shape
        assert moved.min() > 0.999


# The latent and the camera


@pytest.fixture(scope="module")
def nets(tiny_models):
    """The tiny VQGAN and CLIP, with 4 cut-outs."""
    torch.set_num_threads(2)
    vqgan = networks.load_vqgan(tiny_models["vqgan_config"], tiny_models["vqgan_checkpoint"])
    clip_model = networks.load_clip(tiny_models["clip"])
    return vqgan, Perceptor(clip_model, MakeCutouts(clip_model.visual.input_resolution, 4))


def start_latent(vqgan) -> torch.Tensor:
    """The seed's random start latent of a 64x64 picture."""
    return optimise.random_latent(vqgan, 64, 64, torch.Generator().manual_seed(3))


def test_move_latent_decodes_moves_and_encodes(nets):
    vqgan, _ = nets
    z = start_latent(vqgan)
    moved = motion.move_latent(vqgan, z, [0.1, 2, 0.01, 0])
    assert moved.shape == z.shape and moved.dtype == z.dtype and not moved.requires_grad
    with torch.no_grad():
        expected = vqgan.encode(motion.apply(vqgan.synth(z), [0.1, 2, 0.01, 0]))
    assert torch.equal(moved, expected)


def test_camera_waits_for_moves_worth_a_pixel_and_keeps_its_frame(nets):
    vqgan, _ = nets
    track = np.zeros((10, 5))
    track[:, 0] = np.arange(10) * 0.004  # 0.18 px per frame at the corners of 64x64
    camera = motion.Camera(track, 64, 64, min_pixels=0.5)
    z = start_latent(vqgan).clone()
    before = z.clone()
    assert not camera.move(vqgan, z, 1) and not camera.move(vqgan, z, 2)
    assert torch.equal(z, before) and camera.frame == 0
    assert camera.move(vqgan, z, 3) and camera.frame == 3  # 0.54 px since frame 0
    assert torch.equal(z, motion.move_latent(vqgan, before, motion.relative(track, 0, 3)))
    assert not camera.move(vqgan, z, 3) and not camera.move(vqgan, z, 2)
    other = motion.Camera(track, 64, 64)
    other.load_state_dict(camera.state_dict())
    assert other.frame == 3
    still = motion.Camera(np.zeros((10, 5)), 64, 64)
    assert not any(still.move(vqgan, z, f) for f in range(10))
    track[4, 4] = 0.3  # an onset: its frame moves however little
    assert motion.displacement(motion.relative(track, 3, 4), 64, 64) < 0.5
    assert camera.move(vqgan, z, 4) and camera.frame == 4
    track[9, 4] = 0.8  # an onset on a held frame moves the next frame written
    assert camera.move(vqgan, z, 10) and camera.frame == 9


def render(nets, y, settings, fps: float, frames: int, stop_at: int | None = None,
           state: dict | None = None):
    """A renderer in miniature: 1 step per frame in 2 segments; the camera moves the latent
    before each frame's step. Returns the frames, and the state at step stop_at."""
    vqgan, perceptor = nets
    target = perceptor.text_target("a red kite")
    track = motion.react_track(y, SR, fps, frames, settings)
    camera = motion.Camera(track, 64, 64) if settings.active else None
    opt = optimise.Optimiser(vqgan, perceptor, start_latent(vqgan), "Adam", 0.1)
    first = 0
    if state is not None:
        opt.load_state_dict(state["optimiser"])
        if camera:
            camera.load_state_dict(state["camera"])
        first = state["step"]
    half = frames // 2
    pictures, counts = [], frame_sources(frames, frames)
    for i in range(first, frames):
        if i in (0, half):
            torch.manual_seed(7 + (i == half))  # the engine seeds each segment
        if i == stop_at:
            return pictures, {"optimiser": opt.state_dict(), "step": i,
                              "camera": camera.state_dict() if camera else None}
        if camera:
            camera.move(vqgan, opt.z, i)
        result = opt.step([(target, 1.0)], i)
        pictures += [optimise.to_frame(result.image).numpy()] * counts[i]
    return pictures, None


@pytest.fixture(scope="module")
def click_renders(nets):
    """Renders of a 3 s click track at 20 fps with and without --react zoom=0.1."""
    fps, frames = 20.0, 60
    y = demo.click_track(3.0, 120, SR, start=0.4)
    on, _ = render(nets, y, options.parse_react("zoom=0.1"), fps, frames)
    off, _ = render(nets, y, options.ReactSettings(), fps, frames)
    return y, fps, on, off


def test_react_change_peaks_sit_on_the_clicks(click_renders):
    y, fps, on, off = click_renders
    onsets = sync.onset_frames(y, SR, fps)
    assert onsets.size == 6
    with_react = sync.sync_figure(onsets, sync.visual_change(on), fps)
    assert with_react["median_offset_frames"] <= 1 and with_react["share_within_1"] >= 0.8
    without = sync.sync_figure(onsets, sync.visual_change(off), fps)
    assert without["share_within_1"] in (None, 0.0) or without["share_within_1"] < 0.5


def test_resumed_react_run_equals_uninterrupted(nets):
    y = demo.click_track(1.5, 120, SR, start=0.3)
    settings = options.parse_react("zoom=0.1,rotate=3,shift=0.03,drift=0.01")
    whole, _ = render(nets, y, settings, 20.0, 30)
    head, state = render(nets, y, settings, 20.0, 30, stop_at=15)
    assert state["camera"]["frame"] > 0
    tail, _ = render(nets, y, settings, 20.0, 30, state=state)
    assert len(head) + len(tail) == len(whole) == 30
    assert all(np.array_equal(a, b) for a, b in zip(head + tail, whole))


@pytest.fixture(scope="module")
def click_song(tmp_path_factory):
    """Six seconds of clicks at 120 BPM."""
    from music2video.testing import demo

    sr = 22050
    return demo.encode_audio(demo.click_track(6.0, 120, sr), sr,
                             tmp_path_factory.mktemp("clicks") / "clicks.wav")


def react_args(out: str, song, model_flags, *extra) -> list[str]:
    """generate.py with --react, one step per frame, tiny models."""
    return ["-ap", str(song), "-o", out, "-s", "64", "64", "-cuts", "2", "-ips", "30", "-sd", "2",
            "--precision", "fp32", "-se", "0", "--react", "zoom=0.1,drift=0", *model_flags, *extra]


@pytest.mark.slow
def test_react_puts_the_change_peaks_on_the_clicks_through_generate(tmp_path, click_song,
                                                                    model_flags):
    import json

    from helpers import run_script

    result = run_script("generate.py", react_args("o/v.png", click_song, model_flags, "-q"),
                        tmp_path)
    assert result.returncode == 0, result.stderr
    figure = json.loads((tmp_path / "o" / "v" / "report.json").read_text())["sync"]
    assert figure["count"] >= 10
    assert figure["median_offset_frames"] <= 1
    assert figure["share_within_1"] >= 0.8


@pytest.mark.slow
def test_a_killed_react_run_resumes_to_the_same_frames(tmp_path, click_song, model_flags):
    import signal
    import subprocess
    import sys
    import time

    from helpers import REPO, decoded_frames, run_script

    from music2video.driver.folder import RunFolder

    whole = run_script("generate.py", react_args("a/v.png", click_song, model_flags, "-q"),
                       tmp_path)
    assert whole.returncode == 0, whole.stderr
    args = react_args("b/v.png", click_song, model_flags, "-q")
    proc = subprocess.Popen([sys.executable, str(REPO / "generate.py"), *args], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(RunFolder(tmp_path / "b" / "v").done()) < 3 and time.time() < deadline:
        assert proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = run_script("generate.py", args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert decoded_frames(tmp_path / "b" / "v.mp4") == decoded_frames(tmp_path / "a" / "v.mp4")
