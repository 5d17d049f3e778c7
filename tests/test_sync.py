"""The sync figure: visual change, its peaks, onset frames, and a measured synthetic video."""

import numpy as np
import pytest

from music2video.output import sync
from music2video.output.video import FrameWriter
from music2video.testing import demo

FPS = 30.0
SR = 16000


def texture(seed: int, size: int = 64) -> np.ndarray:
    """A random blocky picture (size, size, 3) uint8 that survives H.264 well."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))


def changing_frames(count: int, change_at: list[int], drift: float = 0.0) -> list[np.ndarray]:
    """Frames that hold one picture and switch to a new one exactly at the given indices
    (plus, with drift, a faint flicker on every frame)."""
    rng = np.random.default_rng(99)
    frames, picture = [], texture(0)
    for i in range(count):
        if i in change_at:
            picture = texture(i + 1)
        flicker = rng.integers(0, int(drift) + 1, picture.shape) if drift else 0
        frames.append(np.clip(picture.astype(int) + flicker, 0, 255).astype(np.uint8))
    return frames


def test_visual_change_is_mean_absolute_difference_with_the_frame_before():
    a = np.zeros((2, 2, 3), np.uint8)
    b = a.copy()
    b[0, 0] = 255  # 3 of 12 values change by 255
    c = b.copy()
    c[1, 1, 0] = 12  # 1 of 12 by 12
    change = sync.visual_change(iter([a, a, b, c, a]))
    assert change.tolist() == pytest.approx([0, 0, 255 * 3 / 12, 12 / 12, (255 * 3 + 12) / 12])
    assert sync.visual_change([]).size == 0


def test_change_peaks_find_exactly_the_change_frames():
    change = sync.visual_change(changing_frames(90, [10, 33, 34, 60], drift=3))
    assert sync.change_peaks(change, FPS).tolist() == [10, 33, 60]  # 34 follows 33 (equal size)
    assert sync.change_peaks(np.zeros(50), FPS).size == 0
    assert sync.change_peaks(np.full(50, 4.0), FPS).size == 0
    ramp = np.linspace(1, 5, 60)
    ramp[25] += 10
    assert sync.change_peaks(ramp, FPS).tolist() == [25]


def test_sync_figure_counts_offsets_to_the_nearest_peak():
    change = np.ones(100)
    peaks = np.array([10, 30, 52, 80])
    change[peaks] = 10.0
    onsets = np.array([0, 10, 29, 50, 55, 84, 99, 100])  # 0 and 100 cannot be measured
    figure = sync.sync_figure(onsets, change, FPS)
    # nearest peaks: 10 -> 0, 29 -> +1, 50 -> +2, 55 -> -3, 84 -> -4, 99 -> -19
    assert figure["count"] == 6 and figure["peaks"] == 4
    assert figure["median_offset_frames"] == 2.5
    assert figure["median_signed_offset_frames"] == pytest.approx(np.median([0, 1, 2, -3, -4, -19]))
    assert figure["share_within_1"] == pytest.approx(2 / 6)
    assert figure["chance_within_1"] == pytest.approx(12 / 99)  # frames 1..99 within 1 of a peak
    assert sync.sync_figure(onsets, change, FPS, peaks=np.array([55]))["share_within_1"] == \
        pytest.approx(1 / 6)
    empty = sync.sync_figure(onsets, np.ones(100), FPS)
    assert empty["peaks"] == 0 and empty["median_offset_frames"] is None
    assert "nothing to measure" in sync.sync_line(empty)


def test_second_half_counts_change_peaks_near_an_onset():
    change = np.ones(100)
    peaks = np.array([10, 30, 52, 80])
    change[peaks] = 10.0
    onsets = np.array([10, 29, 50, 55, 84, 99])
    figure = sync.sync_figure(onsets, change, FPS)
    # nearest onsets: 10 -> 0, 30 -> -1, 52 -> -2, 80 -> +4: two of four within 1 frame
    assert figure["peak_share_within_1"] == pytest.approx(2 / 4)
    # frames 9-11, 28-30, 49-51, 54-56, 83-85, 98-99 of 1..99 are within 1 frame of an onset
    assert figure["peak_chance_within_1"] == pytest.approx(17 / 99)
    assert "50% of 4 change peaks within 1 frame of an onset (chance 17%)" in sync.sync_line(figure)
    # a picture that changes on every frame: every onset is near a peak, few peaks near an onset
    every = np.tile([1.0, 1.0, 6.0], 34)[:100]  # a change peak on every third frame
    busy = sync.sync_figure(np.arange(10, 100, 20), every, FPS)
    assert busy["peaks"] == 33 and busy["share_within_1"] == 1.0
    assert busy["peak_share_within_1"] == pytest.approx(5 / 33)
    assert busy["peak_chance_within_1"] == pytest.approx(15 / 99)


def test_onset_frames_of_a_click_track_are_its_beat_frames():
    y = demo.click_track(4.0, 100, SR, start=0.37)
    expected = np.round(demo.beat_grid(4.0, 100, 0.37) * FPS).astype(int)
    assert sync.onset_frames(y, SR, FPS).tolist() == expected.tolist()
    assert sync.onset_frames(np.zeros(SR), SR, FPS).size == 0


@pytest.fixture(scope="module")
def click_video(tmp_path_factory):
    """A 4 s click track, and 64x64 H.264 videos whose pictures switch on its clicks, 3 frames
    late, and never."""
    folder = tmp_path_factory.mktemp("sync")
    y = demo.click_track(4.0, 120, SR, start=0.4)
    clicks = np.round(demo.beat_grid(4.0, 120, 0.4) * FPS).astype(int).tolist()
    videos = {}
    for name, change_at in (("on", clicks), ("late", [c + 3 for c in clicks]), ("still", [])):
        path = folder / f"{name}.mp4"
        with FrameWriter(path, 64, 64, FPS) as writer:
            for frame in changing_frames(120, change_at, drift=2):
                writer.write(frame)
        videos[name] = path
    return y, clicks, videos


def test_measure_video_on_a_synthetic_video_with_known_change_frames(click_video):
    y, clicks, videos = click_video
    on = sync.measure_video(videos["on"], y, SR, FPS)
    assert on["count"] == len(clicks) == 8
    assert on["median_offset_frames"] == 0 and on["share_within_1"] == 1.0
    late = sync.measure_video(videos["late"], y, SR, FPS)
    assert late["median_offset_frames"] == 3 and late["median_signed_offset_frames"] == 3
    assert late["share_within_1"] == 0.0
    still = sync.measure_video(videos["still"], y, SR, FPS)
    assert still["share_within_1"] in (None, 0.0)


def test_measure_video_names_an_unreadable_file(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(sync.SyncError, match="cannot read video"):
        sync.measure_video(bad, np.zeros(SR, np.float32), SR, FPS)
