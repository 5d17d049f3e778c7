"""The command line: bad input is one stderr line and a non-zero exit, before any model loads."""

import json
from pathlib import Path

import pytest
from helpers import command, video_stats, write_lyrics

from music2video import cli
from music2video.driver import pipeline, workers
from music2video.engine import modelset, renderer

FPS = 30


@pytest.fixture
def no_models(monkeypatch, tiny_models):
    """Makes loading any model a test failure: errors must come first. The weight files are
    found (here: the tiny ones), as a run finds them before it analyses the song."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    found = {"config": tiny_models["vqgan_config"], "ckpt": tiny_models["vqgan_checkpoint"],
             "clip": tiny_models["clip"], "wav2clip": tiny_models["wav2clip"]}
    monkeypatch.setattr(renderer, "load_for", refuse)
    monkeypatch.setattr(workers, "load_for", refuse)
    monkeypatch.setattr(modelset, "resolve_weights", lambda *args, **kwargs: found)


def one_error_line(capsys, *expected: str) -> str:
    """The single error line on stderr, checked to contain each expected text."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def base_args(tmp_path: Path, song, *extra) -> list[str]:
    """A small generate command line writing into tmp_path."""
    return command(song, tmp_path / "out" / "v.png", "-q", *extra, ips=2)


def test_missing_song(tmp_path, capsys, no_models):
    assert cli.main("beats", base_args(tmp_path, tmp_path / "nope.mp3")) == 1
    one_error_line(capsys, "nope.mp3", "not found")
    assert not (tmp_path / "out" / "v.mp4").exists()


def test_undecodable_song(tmp_path, capsys, no_models):
    bad = tmp_path / "song.mp3"
    bad.write_text("this is not audio")
    assert cli.main("beats", base_args(tmp_path, bad)) == 1
    one_error_line(capsys, "song.mp3", "cannot decode")


def test_empty_song(tmp_path, capsys, no_models):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert cli.main("interpolate", base_args(tmp_path, empty)) == 1
    one_error_line(capsys, "empty.wav", "empty")


def test_malformed_lyrics_name_the_line(tmp_path, capsys, short_song, no_models):
    lyrics = write_lyrics(tmp_path / "l.csv", ["00:01,fine", "0x:02,broken"])
    assert cli.main("beats", base_args(tmp_path, short_song, "-lyr", str(lyrics))) == 1
    one_error_line(capsys, "l.csv", "line 3")


def test_lyrics_all_past_the_end_are_refused(tmp_path, capsys, short_song, no_models):
    lyrics = write_lyrics(tmp_path / "l.csv", ["05:00,far too late"])
    assert cli.main("beats", base_args(tmp_path, short_song, "-lyr", str(lyrics))) == 1
    one_error_line(capsys, "l.csv")


def test_unknown_clip_model(tmp_path, capsys, short_song, tiny_models):
    args = base_args(tmp_path, short_song, "-m", "ViT-Huge/99", "-conf",
                     str(tiny_models["vqgan_config"]), "-ckpt", str(tiny_models["vqgan_checkpoint"]))
    assert cli.main("beats", args) == 1
    one_error_line(capsys, "ViT-Huge/99", "available models", "ViT-B/32")
    assert not (tmp_path / "out" / "v.mp4").exists()


def test_missing_vqgan_files(tmp_path, capsys, short_song, model_flags):
    args = base_args(tmp_path, short_song, *model_flags[4:], "-conf", str(tmp_path / "a.yaml"),
                     "-ckpt", str(tmp_path / "a.ckpt"))
    assert cli.main("beats", args) == 1
    one_error_line(capsys, "a.yaml", "download_models.sh")


def test_size_smaller_than_a_cell(tmp_path, capsys, short_song, model_flags):
    assert cli.main("beats", base_args(tmp_path, short_song, *model_flags, "-s", "2", "2")) == 1
    one_error_line(capsys, "-s 2 2", "at least")


def test_no_weights_and_no_network(tmp_path, capsys, short_song, monkeypatch):
    """Missing default weights with no network (conftest points downloads at a closed local
    port): one short line, the problem first and the fix last, before the song is analysed."""
    from music2video.song import plan

    monkeypatch.setattr(plan, "read_song", lambda *a: pytest.fail("the song was analysed"))
    ck = tmp_path / "ck"
    assert cli.main("beats", base_args(tmp_path, short_song, "--checkpoints", str(ck))) == 1
    line = one_error_line(capsys, "error: cannot download vqgan_imagenet_f16_16384.yaml into "
                          f"{ck} (", "refused")
    assert line.endswith("; connect to the internet, or give -conf and -ckpt")
    assert len(line) - len(str(ck)) < 160
    assert [p.name for p in ck.iterdir()] == []


@pytest.mark.parametrize("flags,expected", [
    (["-cuts", "0"], "-cuts/--num_cuts: '0' is out of range; give a whole number from 1"),
    (["-s", "0", "64"], "-s/--size: '0' is out of range"),
    (["-ips", "-1"], "-ips/--iterations_per_second: '-1' is out of range"),
    (["-vsd", "frames/"], "-vsd"),
    (["-nps", "1", "2", "-npw", "0.5"], "one weight per seed"),
    (["-i", "100"], "-i"),
    (["-cpe", "5"], "-cpe"),
    (["-ofps", "20"], "-ofps"),
    (["--fps", "24", "-ifps", "12"], "--fps and -ifps"),
    (["-cutm", "sideways"], "invalid choice"),
    (["-ips", "inf"], "not a finite number"),
    (["-ips", "nan"], "not a finite number"),
    (["--fps", "nan"], "not a finite number"),
    (["--fps", "inf"], "not a finite number"),
    (["-lr", "1e999"], "not a finite number"),
    (["-p", "a red fox:nan"], "-p 'a red fox:nan': the weight"),
    (["-p", "a red fox:1:inf"], "the stop"),
    (["-ip", "pic.png:inf"], "-ip 'pic.png:inf': the weight"),
    (["-o", "out\nput/v.png"], "control character"),
    (["-gid", "0,x"], "not a GPU index"),
    (["-gid", "1,1"], "distinct"),
    (["--sections", "0"], "--sections"),
    (["--sections", "many"], "--sections"),
    (["--workers", "0"], "--workers: '0' is out of range; give a whole number from 1 to"),
    (["-lr", "1e39"], "-lr/--learning_rate: '1e39' is out of range; give a number above 0, at most"),
    (["-lr", "0"], "-lr/--learning_rate: '0' is out of range"),
    (["-sf", "1000000000"], "-sf/--audio_sampling_freq: '1000000000' is out of range"),
    (["-vl", "0.000001"], "-vl/--video_length: '0.000001' is out of range; give a number from 0.5"),
    (["--fps", "0.01"], "--fps: '0.01' is out of range; give a number from 1 to 240"),
    (["-ifps", "0"], "-ifps/--input_video_fps: '0' is out of range"),
    (["-ofps", "1e6"], "-ofps/--output_video_fps: '1e6' is out of range"),
    (["-cuts", "2.5"], "-cuts/--num_cuts: '2.5' is not a whole number"),
    (["-npw", "1e39", "-nps", "1"], "-npw/--noise_prompt_weights: '1e39' is out of range"),
    (["-nps", "-1", "-npw", "1"], "-nps/--noise_prompt_seeds: '-1' is not a seed"),
    (["-p", "a red fox:1e39"], "-p 'a red fox:1e39': the weight must be from"),
    (["-iw", "-1"], "-iw/--init_weight: '-1' is out of range"),
    (["-cutp", "0"], "-cutp/--cut_power: '0' is out of range"),
    (["-zsc", "0"], "-zsc/--zoom_scale: '0' is out of range"),
    (["-zse", "0"], "-zse/--zoom_save_every: '0' is out of range"),
    (["-zsx", "1e9"], "-zsx/--zoom_shift_x: '1e9' is not a whole number"),
    (["-zsy", "1000000000"], "-zsy/--zoom_shift_y: '1000000000' is out of range"),
    (["-i", "0"], "-i/--iterations: '0' is out of range"),
    (["-se", "-1"], "-se/--save_every: '-1' is out of range"),
    (["-cpe", "-1"], "-cpe/--change_prompt_every: '-1' is out of range"),
    (["--warmup", "-1"], "--warmup: '-1' is out of range"),
    (["--lyric_beats", "0"], "--lyric_beats: '0' is out of range"),
    (["-cd", "cpu", "-gid", "0,1"], "-cd picks one device"),
])
def test_impossible_flags(tmp_path, capsys, short_song, flags, expected):
    with pytest.raises(SystemExit) as info:
        cli.main("beats", base_args(tmp_path, short_song, *flags))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err, err


def test_help_shows_every_numbers_range(capsys):
    with pytest.raises(SystemExit):
        cli.get_parser("beats").parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("learning rate; above 0, at most 100", "0.5 to 3600", "8000 to 192000",
                  "of the video (default: 30); 1 to 240"):
        assert shown in text, shown


def test_lyric_beats_only_in_generate(tmp_path, capsys, short_song):
    with pytest.raises(SystemExit):
        cli.main("interpolate", base_args(tmp_path, short_song, "--lyric_beats", "2"))
    with pytest.raises(SystemExit):
        cli.main("beats", base_args(tmp_path, short_song, "--blend"))


def test_options_keep_the_seeds_flags(short_song):
    opts = cli.parse_options("beats", ["-ap", str(short_song), "-aug", "Ji", "Sh", "-aug", "Gn",
                                       "-ifps", "15", "-gid", "2", "-cd", "cpu"])
    assert opts.augments == ("Ji", "Sh", "Gn") and opts.fps == 15 and opts.gpu_id == (2,)
    outputs = pipeline.outputs_for(opts, short_song)  # no -o: named after the song
    assert outputs.video == Path(f"outputs/{short_song.stem}.mp4")
    assert outputs.run_dir == Path(f"outputs/{short_song.stem}")
    assert outputs.preview == Path(f"outputs/{short_song.stem}.png")
    seed = cli.parse_options("beats", ["-ap", str(short_song), "-o", "outputs/output.png"])
    outputs = pipeline.outputs_for(seed, short_song)  # the seed's -o, as it always was
    assert outputs.video == Path("outputs/output.mp4")
    assert outputs.run_dir == Path("outputs/output") and outputs.preview == Path("outputs/output.png")
    default = cli.parse_options("beats", ["-ap", str(short_song)])
    assert default.augments == ("Af", "Pe", "Ji", "Er") and default.fps == 30
    assert default.size == (512, 512) and default.iterations_per_second == 0
    assert default.audio_prompt == (short_song,) and default.sections == 1
    assert cli.parse_options("interpolate", ["-ap", str(short_song)]).iterations_per_second == 100
    assert cli.parse_options("interpolate", ["-ap", "x", "-i", "9"]).iterations_per_second == 0


def test_every_knob_runs_together(tmp_path, short_song, model_flags):
    """The seed's style and motion knobs all work in one run (and -ofps interpolates)."""
    from PIL import Image

    picture = tmp_path / "pic.png"
    Image.new("RGB", (40, 30), (200, 30, 60)).save(picture)
    args = base_args(tmp_path, short_song, *model_flags, "-ips", "3", "-p",
                     "oil painting:1|dark:-0.5^watercolour", "-cpe", "4", "-ip", f"{picture}:0.5",
                     "-ii", str(picture), "-iw", "0.5", "-nps", "1", "2", "-npw", "0.3", "0.2",
                     "-cutm", "nrupdated", "-aug", "Ji", "Sh", "Re", "-opt", "DiffGrad", "-zvid",
                     "-zse", "3", "-zsc", "0.95", "-zsx", "2", "-zsy", "1", "-ofps", "60", "-d",
                     "-se", "5", "-sd", "1")
    assert cli.main("beats", args) == 0
    stats = video_stats(tmp_path / "out" / "v.mp4")
    assert stats["fps"] == 60
    assert abs(stats["seconds"] - stats["audio_seconds"]) <= 1 / FPS
    assert (tmp_path / "out" / "v.png").is_file()
    manifest = json.loads((tmp_path / "out" / "v" / "manifest.json").read_text())
    assert manifest["identity"]["optimiser"] == "DiffGrad"
    report = json.loads((tmp_path / "out" / "v" / "report.json").read_text())
    assert report["fps"] == 60 and report["video_frames"] == stats["frames"]
    assert abs(report["frame_difference"]) <= 1  # counted at the interpolated rate


@pytest.mark.parametrize("mode", ["beats", "interpolate"])
def test_init_noise_modes_run(tmp_path, short_song, model_flags, mode):
    args = base_args(tmp_path, short_song, *model_flags, "-in", "gradient", "-ips", "1",
                     "-cutm", "original", "-opt", "RAdam")
    assert cli.main(mode, args) == 0


def test_failed_start_leaves_no_blocking_run(tmp_path, capsys, short_song, model_flags):
    """A command that fails its checks, then the corrected one: no --overwrite needed."""
    wrong_model = [*model_flags[:4], "-m", "ViT-Bogus", *model_flags[6:]]
    assert cli.main("beats", base_args(tmp_path, short_song, *wrong_model)) == 1
    assert cli.main("beats", base_args(tmp_path, short_song, *model_flags, "-s", "2", "2")) == 1
    capsys.readouterr()
    assert cli.main("beats", base_args(tmp_path, short_song, *model_flags, "-ips", "1")) == 0
    assert (tmp_path / "out" / "v.mp4").is_file()


@pytest.mark.parametrize("flag", ["-ii", "-ip"])
def test_missing_or_unreadable_pictures(tmp_path, capsys, short_song, no_models, flag):
    assert cli.main("beats", base_args(tmp_path, short_song, flag, str(tmp_path / "no.png"))) == 1
    one_error_line(capsys, "no.png", "PNG or JPEG")
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    assert cli.main("beats", base_args(tmp_path, short_song, flag, f"{text}:0.5")) == 1
    one_error_line(capsys, "notes.png")
    assert not (tmp_path / "out").exists()


def can_mount() -> bool:
    """Whether this process may mount a tmpfs in a private mount namespace (root on Linux)."""
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


SMALL_DISK = """
import subprocess, sys
folder, script, size, bigger = sys.argv[1:5]
args = sys.argv[5:]
subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", folder], check=True)
first = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
leftovers = sorted(str(p) for p in __import__("pathlib").Path(folder).rglob("*.part*"))
subprocess.run(["mount", "-o", f"remount,size={bigger}", folder], check=True)
second = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
print(repr((first.returncode, first.stderr, leftovers, second.returncode, second.stderr)))
"""


@pytest.mark.slow
@pytest.mark.skipif(not can_mount(), reason="needs a private mount namespace (root, unshare -m)")
@pytest.mark.parametrize("size", ["48k", "160k"])
def test_a_full_disk_is_one_line_and_the_run_resumes_once_there_is_room(
        tmp_path, short_song, model_flags, size):
    """The output folder on a tiny disk: the run stops with one line, leaves no temporary file,
    and the same command finishes once the disk has room."""
    import ast
    import subprocess
    import sys

    from helpers import REPO

    disk = tmp_path / "disk"
    disk.mkdir()
    args = ["-o", str(disk / "v.png"), "-ap", str(short_song), "-s", "64", "64", "-cuts", "2",
            "-ips", "1", "-sd", "1", "-q", *model_flags]
    result = subprocess.run(["unshare", "-m", sys.executable, "-c", SMALL_DISK, str(disk),
                             str(REPO / "generate.py"), size, "50m", *args],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    code, stderr, leftovers, again, again_err = ast.literal_eval(result.stdout.strip())
    assert code == 1, stderr
    lines = [line for line in stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert "No space left on device" in lines[0] and "run the same command again" in lines[0]
    assert leftovers == []
    assert again == 0, again_err


@pytest.mark.slow
@pytest.mark.skipif(not can_mount(), reason="needs a private mount namespace (root, unshare -m)")
def test_a_read_only_output_folder_is_one_line(tmp_path, short_song, model_flags):
    import subprocess
    import sys

    from helpers import REPO

    disk = tmp_path / "ro"
    disk.mkdir()
    script = (f"mount -t tmpfs -o ro,size=64k tmpfs {disk} && exec {sys.executable} "
              f"{REPO / 'generate.py'} \"$@\"")
    result = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", "-o",
                             str(disk / "out" / "v.png"), "-ap", str(short_song), "-q",
                             *model_flags], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and "Read-only file system" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("bad", ["file/v.png", "file/deeper/v.png"])
def test_an_output_under_a_file_is_one_line(tmp_path, capsys, short_song, no_models, bad):
    (tmp_path / "file").write_text("a file, not a folder")
    args = ["-o", str(tmp_path / bad), "-ap", str(short_song), "-q"]
    assert cli.main("beats", args) == 1
    one_error_line(capsys, "part of that path is a file")


@pytest.mark.parametrize("where", [".", "..", "/"])
def test_an_existing_folder_as_output_gets_the_song_named_files(tmp_path, monkeypatch, short_song,
                                                                where):
    """-o naming an existing folder puts <song>.mp4 and <song>/ inside it, touching nothing else."""
    monkeypatch.chdir(tmp_path)
    opts = cli.parse_options("beats", ["-ap", str(short_song), "-o", where])
    outputs = pipeline.outputs_for(opts, short_song)
    assert outputs.video == Path(where) / f"{short_song.stem}.mp4"
    assert outputs.run_dir == Path(where) / short_song.stem
    assert outputs.preview == Path(where) / f"{short_song.stem}.png"


def test_output_folder_of_an_earlier_run_is_its_run_folder(tmp_path, short_song):
    """-o outputs/output (no suffix) twice: the second run finds the first's run folder."""
    run_dir = tmp_path / "output"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text("{}")
    opts = cli.parse_options("beats", ["-ap", str(short_song), "-o", str(run_dir)])
    assert pipeline.outputs_for(opts, short_song).run_dir == run_dir


def test_a_picture_too_big_for_the_machine_is_refused_before_models_load(
        tmp_path, capsys, short_song, model_flags, monkeypatch):
    loaded = []
    monkeypatch.setattr(renderer, "load_for", lambda *a, **k: loaded.append(1))
    monkeypatch.setattr(workers, "load_for", lambda *a, **k: loaded.append(1))
    args = ["-o", str(tmp_path / "o" / "v.png"), "-ap", str(short_song), "-s", "100000",
            "100000", "-q", *model_flags]
    assert cli.main("beats", args) == 1
    one_error_line(capsys, "-s 100000 100000", "GiB", "smaller -s")
    assert loaded == []
    assert not (tmp_path / "o" / "v").exists()


@pytest.mark.parametrize("flags, named", [
    (["-s", "4000", "4000"], "-s 4000 4000"),  # fits but for the decoder's (hw, hw) attention
    (["-s", "64", "64", "-cuts", "100000"], "-cuts 100000"),  # fits but for the cut-outs
])
def test_a_step_too_big_for_the_machine_is_refused_up_front(
        tmp_path, capsys, short_song, model_flags, monkeypatch, flags, named):
    loaded = []
    monkeypatch.setattr(renderer, "load_for", lambda *a, **k: loaded.append(1))
    monkeypatch.setattr(workers, "load_for", lambda *a, **k: loaded.append(1))
    monkeypatch.setattr(pipeline, "device_memory", lambda device: 64 * 2**30)  # any machine
    args = ["-o", str(tmp_path / "o" / "v.png"), "-ap", str(short_song), *flags, "-q",
            *model_flags]
    assert cli.main("beats", args) == 1
    one_error_line(capsys, named, "GiB for one step", "fewer -cuts")
    assert loaded == []
    assert not (tmp_path / "o" / "v").exists()


@pytest.mark.parametrize("damage", ["crc", "data"])
def test_a_damaged_png_is_refused_up_front(tmp_path, capsys, short_song, no_models, damage):
    """A PNG with a bad CRC, or with valid CRCs over corrupt image data, is one line."""
    import struct
    import zlib

    from PIL import Image

    good = tmp_path / "good.png"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(good)
    data = bytearray(good.read_bytes())
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4:idat])[0]
    if damage == "crc":
        data[idat + 4 + length] ^= 0xFF  # the chunk's CRC
    else:
        body = bytes(data[idat + 4:idat + 4 + length])
        body = body[:2] + bytes(b ^ 0x5A for b in body[2:])  # zlib stream garbled
        data[idat + 4:idat + 4 + length] = body
        crc = zlib.crc32(b"IDAT" + body) & 0xFFFFFFFF
        data[idat + 4 + length:idat + 8 + length] = struct.pack(">I", crc)
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    for flag in ("-ii", "-ip"):
        assert cli.main("beats", base_args(tmp_path, short_song, flag, str(bad))) == 1
        one_error_line(capsys, "bad.png", "PNG or JPEG")
    assert not (tmp_path / "out").exists()


def test_few_total_steps_warn_that_every_segment_gets_one(tmp_path, capsys, short_song,
                                                          model_flags, monkeypatch):
    from music2video.song import plan

    opts = cli.parse_options("beats", ["-ap", str(short_song), "-i", "3"])
    song = plan.read_song(short_song, 16000)
    with pytest.warns(UserWarning, match="-i 3 is fewer steps than the song has segments"):
        segments = plan.build_schedule(opts, song, [])
    assert all(s.iterations >= 1 for s in segments)


@pytest.mark.parametrize("clash", ["lyrics", "song", "picture"])
def test_outputs_never_overwrite_the_runs_inputs(tmp_path, capsys, short_song, no_models, clash):
    """-o chosen so that the subtitles, the video or the preview would land on an input."""
    import shutil

    folder = tmp_path / "g"
    folder.mkdir()
    song = folder / "track.mp4" if clash == "song" else folder / "track.mp3"
    shutil.copy(short_song, song)
    lyrics = write_lyrics(folder / "track.srt" if clash == "lyrics" else folder / "l.csv",
                          ["00:01,a line"])
    if clash == "lyrics":
        lyrics.write_text("1\n00:00:01,000 --> 00:00:02,000\na line\n", encoding="utf-8")
    picture = folder / "track.png"
    from PIL import Image

    Image.new("RGB", (16, 16)).save(picture)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    args = ["-ap", str(song), "-lyr", str(lyrics), "-o", str(folder / "track.png"), "-q"]
    if clash == "picture":
        args += ["-ii", str(picture)]
    assert cli.main("beats", args) == 1
    one_error_line(capsys, "choose another -o")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


@pytest.mark.parametrize("seed", ["-5", "4294967296", "99999999999999999999", "1.5"])
def test_a_seed_out_of_range_is_refused_at_parsing(tmp_path, capsys, short_song, seed):
    with pytest.raises(SystemExit) as info:
        cli.main("beats", base_args(tmp_path, short_song, "-sd", seed))
    assert info.value.code == 2
    assert "is not a seed" in capsys.readouterr().err


def test_an_output_ending_in_a_slash_is_a_folder(tmp_path, short_song):
    opts = cli.parse_options("beats", ["-ap", str(short_song), "-o", f"{tmp_path}/new/"])
    outputs = pipeline.outputs_for(opts, short_song)
    assert outputs.video == tmp_path / "new" / f"{short_song.stem}.mp4"
    assert outputs.run_dir == tmp_path / "new" / short_song.stem


def test_changed_image_prompt_pictures_refuse_a_resume(tmp_path, short_song):
    from PIL import Image

    picture = tmp_path / "style.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(picture)
    opts = cli.parse_options("beats", ["-ap", str(short_song), "-ip", f"{picture}:0.5"])
    first = pipeline.run_identity(opts, short_song, None, {})
    Image.new("RGB", (8, 8), (0, 0, 255)).save(picture)
    assert pipeline.run_identity(opts, short_song, None, {}) != first


@pytest.mark.parametrize("name", ["v.mp4", "v.png", "v.srt", "v_storyboard.png", "folder"])
def test_the_users_files_beside_o_are_refused_before_models_load(tmp_path, capsys, short_song,
                                                                 no_models, name):
    """Files a run did not write, where its outputs go (-o out/v.png, or -o out/ and the song's
    name), are never replaced: one line naming the file and the fix."""
    import shutil

    out = tmp_path / "out"
    out.mkdir()
    song = tmp_path / "v.mp3"
    shutil.copy(short_song, song)
    lyrics = write_lyrics(tmp_path / "l.csv", ["00:01,a line"])
    (out / ("v.mp4" if name == "folder" else name)).write_bytes(b"the user's own")
    target = str(out) + "/" if name == "folder" else str(out / "v.png")
    args = ["-o", target, "-ap", str(song), "-lyr", str(lyrics), "-q"]
    assert cli.main("beats", args) == 1
    one_error_line(capsys, str(out / ("v.mp4" if name == "folder" else name)),
                   "was not written by this run", "--overwrite", "another -o")
    assert [p.name for p in out.iterdir()] == ["v.mp4" if name == "folder" else name]
    assert (out / ("v.mp4" if name == "folder" else name)).read_bytes() == b"the user's own"


@pytest.mark.parametrize("name", ["v.mp4", "v.srt", "v_storyboard.png"])
def test_a_folder_where_an_output_goes_is_refused_up_front(tmp_path, capsys, short_song,
                                                           no_models, name):
    lyrics = write_lyrics(tmp_path / "l.csv", ["00:01,a line"])
    (tmp_path / "out" / name).mkdir(parents=True)
    (tmp_path / "out" / name / "inside.txt").write_text("keep")
    for extra in ([], ["--overwrite"]):
        assert cli.main("beats", base_args(tmp_path, short_song, "-lyr", str(lyrics),
                                           *extra)) == 1
        one_error_line(capsys, str(tmp_path / "out" / name), "is a folder", "choose another -o")
    assert [p.name for p in (tmp_path / "out").iterdir()] == [name]
    assert (tmp_path / "out" / name / "inside.txt").read_text() == "keep"


def test_outputs_of_songs_of_one_batch_never_collide(tmp_path, capsys, short_song, monkeypatch,
                                                    no_models):
    """song5_storyboard.mp3's preview would be song5.mp3's storyboard: refused up front."""
    import shutil

    class Loading(Exception):
        pass

    def loading(*args, **kwargs):
        raise Loading

    monkeypatch.setattr(workers, "load_for", loading)
    for name in ("song5.mp3", "song5_storyboard.mp3"):
        shutil.copy(short_song, tmp_path / name)
    args = ["-o", str(tmp_path / "out") + "/", "-ap", str(tmp_path / "song5.mp3"),
            str(tmp_path / "song5_storyboard.mp3"), "-q"]
    with pytest.raises(Loading):  # the first song goes on to its models, alone
        cli.main("beats", args)
    line = one_error_line(capsys, "song5_storyboard.mp3", "preview picture",
                          str(tmp_path / "out" / "song5_storyboard.png"), "storyboard of",
                          "rename one of the songs")
    assert line.index("song5_storyboard.mp3") < line.index("preview")
