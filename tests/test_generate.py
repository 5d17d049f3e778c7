"""generate.py end to end with the tiny models: synced video, lyrics used, run folder, errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import command, decoded_frames, run_script, video_stats

from music2video import cli, ffmpeg

pytestmark = pytest.mark.slow  # runs the scripts or Ray end to end

FPS = 30
LYRICS = ["00:02.10,a red fox: running", "00:02.30,a blue whale", "00:06,the moon over water"]


def generate_args(out: Path, song: Path, lyrics: Path | None, model_flags, *extra) -> list[str]:
    """A generate command line with small settings."""
    return command(song, out, "-vid", "-q", *extra, lyrics=lyrics, models=model_flags, cuts=4,
                   ips=4, seed=7)


@pytest.fixture(scope="module")
def beats_run(tmp_path_factory, short_song, lyrics_file, model_flags) -> dict:
    """One finished generate.py run, with an old video lying in the way that --overwrite lets
    it replace (without it, the run is refused: see test_cli)."""
    root = tmp_path_factory.mktemp("run")
    run_dir = root / "outputs" / "output"
    run_dir.parent.mkdir(parents=True)
    (root / "outputs" / "output.mp4").write_bytes(b"the previous song's video")
    code = cli.main("beats", generate_args(root / "outputs" / "output.png", short_song,
                                           lyrics_file, model_flags, "--overwrite"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {"code": code, "root": root, "run_dir": run_dir, "manifest": manifest,
            "video": root / "outputs" / "output.mp4"}


def test_run_finishes_with_one_video_and_one_audio_stream(beats_run):
    assert beats_run["code"] == 0
    stats = video_stats(beats_run["video"])
    assert stats["video"] == ["h264"] and stats["audio"] == ["aac"]
    assert stats["size"] == (64, 64)


def test_video_length_matches_the_song_within_a_frame(beats_run, short_song):
    stats = video_stats(beats_run["video"])
    song_seconds = len(demo_samples(short_song)) / 16000
    assert stats["frames"] == round(song_seconds * FPS)
    assert abs(stats["frames"] / FPS - song_seconds) <= 1 / FPS
    assert abs(stats["audio_seconds"] - song_seconds) <= 1 / FPS


def demo_samples(path):
    """The song as the tool decodes it."""
    from music2video.song.audio import load_audio

    return load_audio(path, 16000)


def test_segments_tile_the_song_and_every_lyric_guides_one(beats_run):
    segments = beats_run["manifest"]["segments"]
    assert segments[0]["start"] == 0 and segments[0]["frame_start"] == 0
    for a, b in zip(segments, segments[1:]):
        assert a["end"] == b["start"] and a["frame_end"] == b["frame_start"]
    texts = [g["text"] for s in segments for g in s["goals"] if g["kind"] == "text"]
    assert sorted(texts) == sorted(line.split(",", 1)[1] for line in LYRICS)
    shared = [s for s in segments if len([g for g in s["goals"] if g["kind"] == "text"]) == 2]
    assert len(shared) == 1 and shared[0]["start"] <= 2.1 < shared[0]["end"]
    assert all(g["kind"] == "audio" for s in segments if s["start"] < 2.0 for g in s["goals"])


def test_only_the_manifests_chunks_are_joined(beats_run, tmp_path):
    from music2video.driver.combine import combine

    manifest, run_dir = beats_run["manifest"], beats_run["run_dir"]
    listed = [s["chunk"] for s in manifest["segments"] if s["chunk"]]
    on_disk = sorted(p.name for p in run_dir.glob("chunk_*.mp4"))
    assert listed == on_disk == sorted(listed)
    done = {json.loads(line)["segment"] for line in (run_dir / "progress.jsonl").open()}
    assert done == set(range(len(manifest["segments"])))
    chunk_frames = sum(ffmpeg.count_frames(run_dir / name)[0] for name in listed)
    assert chunk_frames == video_stats(beats_run["video"])["frames"]
    (run_dir / "chunk_99999.mp4").write_bytes((run_dir / listed[0]).read_bytes())
    again = combine(run_dir, None, tmp_path / "again.mp4", False, None)
    assert decoded_frames(again) == decoded_frames(beats_run["video"])


def test_no_temporary_files_are_left(beats_run):
    leftovers = [p.name for p in beats_run["root"].rglob("*") if ".part" in p.name]
    assert leftovers == []


def test_same_seed_gives_the_same_frames(beats_run, tmp_path, short_song, lyrics_file, model_flags):
    out = tmp_path / "again" / "output.png"
    assert cli.main("beats", generate_args(out, short_song, lyrics_file, model_flags)) == 0
    assert decoded_frames(out.with_suffix(".mp4")) == decoded_frames(beats_run["video"])


def test_style_prompt_enters_the_loss(tiny_models, short_song, tmp_path):
    from music2video.engine.guidance import Target
    from music2video.engine.modelset import WeightChoice
    from music2video.engine.optimise import Optimiser
    from music2video.engine.renderer import Renderer, RenderSpec, load_for

    weights = WeightChoice(str(tiny_models["vqgan_config"]), str(tiny_models["vqgan_checkpoint"]),
                           str(tiny_models["clip"]), str(tiny_models["wav2clip"]), None)

    def first_loss(prompts):
        spec = RenderSpec(weights=weights, device="cpu", size=(64, 64), segments=(), seed=1,
                          sr=16000, fps=30, precision="fp32", threads=1, num_cuts=4,
                          prompts=prompts)
        renderer = Renderer(spec, np.zeros(16000, np.float32), load_for(spec))
        models = renderer.models
        goal = Target(torch.ones(1, models.embed_dim))
        torch.manual_seed(0)
        opt = Optimiser(models.vqgan, models.perceptor, renderer.start_latent)
        return opt.step([(goal, 1.0), *renderer._style_at(0)], 0).loss.item(), renderer

    plain, renderer = first_loss(None)
    styled, styled_renderer = first_loss("oil painting:2")
    assert renderer._style_at(0) == []
    assert [w for _, w in styled_renderer._style_at(0)] == [2.0]
    assert styled > plain


@pytest.mark.parametrize("script,extra", [
    ("generate.py", ["-lyr", "LYRICS", "-gid", "2"]),
    ("generate_interpolate.py", ["-lyr", "LYRICS", "-gid", "0"]),
    ("generate.py", ["-gid", "2"]),
])
def test_seed_readme_commands_run_to_completion(script, extra, tmp_path, short_song, model_flags):
    """The seed's three README commands, with our file names and the tiny models."""
    seed_lyrics = Path(__file__).resolve().parents[1] / "lyrics" / "imagenet_song_lyrics.csv"
    extra = [str(seed_lyrics) if e == "LYRICS" else e for e in extra]
    args = ["-vid", "-o", "outputs/output.png", "-ap", str(short_song), "-ips", "3",
            "-s", "64", "64", "-cuts", "4", *extra, *model_flags]
    result = run_script(script, args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    stats = video_stats(tmp_path / "outputs" / "output.mp4")
    assert abs(stats["frames"] / FPS - stats["audio_seconds"]) <= 1 / FPS
    assert "video: outputs/output.mp4 (run folder outputs/output/)" in result.stderr


def test_demo_song_and_lyrics_are_in_the_repo():
    repo = Path(__file__).resolve().parents[1]
    from music2video.song.lyrics import load_lyrics

    lines = load_lyrics(repo / "lyrics" / "demo_song.csv")
    samples = demo_samples(repo / "demo" / "demo_song.mp3")
    assert 20 <= len(samples) / 16000 <= 40
    assert all(0 < line.time < len(samples) / 16000 for line in lines)
    assert any(":" in line.text for line in lines)


def test_relative_names_with_colons(tmp_path, short_song, model_flags):
    """ffmpeg reads 'track:1.mp3' as a protocol unless told it is a file."""
    (tmp_path / "track:1.mp3").write_bytes(short_song.read_bytes())
    args = ["-ap", "track:1.mp3", "-o", "take:2/v.png", "-ips", "1", "-s", "64", "64",
            "-cuts", "2", "-q", *model_flags]
    result = run_script("generate.py", args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    stats = video_stats(tmp_path / "take:2" / "v.mp4")
    assert abs(stats["frames"] / FPS - stats["audio_seconds"]) <= 1 / FPS
    again = run_script("combine_mp4.py", ["take:2/v", "--output", "re:joined.mp4"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert video_stats(tmp_path / "re:joined.mp4")["frames"] == stats["frames"]
