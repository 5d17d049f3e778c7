"""What a run says, and where: the plan and its estimate before the first step (--plan stops
there), a quiet console by default (-v for every segment), human lines on stderr only."""

import re

from helpers import command

from music2video import cli

LYRICS = ["00:01,a lighthouse at dusk", "00:05,a field of sunflowers"]


def small(song, out, model_flags, *extra) -> list[str]:
    """A small run of the tiny models: 66² (rendered as 64²), 1 step a second, fixed seed."""
    return command(song, out, "--precision", "fp32", *extra, models=model_flags, size=66, ips=1,
                   seed=5)


def test_plan_prints_the_plan_and_its_estimate_and_writes_nothing(tmp_path, monkeypatch, capsys,
                                                                 short_song, lyrics_file,
                                                                 model_flags):
    monkeypatch.chdir(tmp_path)
    code = cli.main(None, small(short_song, tmp_path / "out" / "v.png", model_flags,
                                "-lyr", lyrics_file, "--plan"))
    out, err = capsys.readouterr()
    assert code == 0 and out == ""
    assert "-s 66 66 is rendered as 64x64: pictures are whole" in err  # the size rounded, said
    plan = next(line for line in err.splitlines() if line.startswith(short_song.name))
    assert re.search(r"0:10 of song, \d+ segments \(\d+ with lyrics\) in 1 section\(s\), \d+ "
                     r"steps, 300 frames at 30 fps, 64x64$", plan), plan
    assert re.search(r"^estimate: about \d+:\d\d for \d+ steps \([\d.e-]+ s a step, timed on cpu "
                     r"in fp32 at the run's size; 1 worker\(s\)\)$", err, re.M), err
    assert list(tmp_path.iterdir()) == []  # no run folder, no outputs


def test_a_run_says_its_estimate_before_the_first_step_and_little_else(tmp_path, capsys,
                                                                      short_song, lyrics_file,
                                                                      model_flags):
    code = cli.main("beats", [*small(short_song, tmp_path / "v.png", model_flags,
                                            "-lyr", lyrics_file)])
    out, err = capsys.readouterr()
    assert code == 0 and out == ""
    lines = err.splitlines()
    estimate = next(i for i, line in enumerate(lines) if line.startswith("estimate: about"))
    assert estimate < next(i for i, line in enumerate(lines) if line.startswith("done: "))
    assert not [line for line in lines if re.match(r"\[\d+/\d+\]|step \d+: loss", line)]
    lyric_lines = [line for line in lines if re.match(r"\d:\d\d '", line)]
    assert lyric_lines == ["0:01 'a lighthouse at dusk'", "0:05 'a field of sunflowers'"]
    assert not [line for line in lines if line.startswith("precision")]  # its reason: -v only


def test_verbose_gives_a_line_per_segment_and_the_loss(tmp_path, capsys, short_song, model_flags):
    code = cli.main("beats", [*small(short_song, tmp_path / "v.png", model_flags, "-v",
                                            "-se", "2")])
    out, err = capsys.readouterr()
    assert code == 0 and out == ""
    segments = [line for line in err.splitlines() if re.match(r"\[\d+/\d+\] ", line)]
    count = int(segments[0].split("/")[1].split("]")[0])
    assert len(segments) == count and re.search(r"^step \d+: loss ", err, re.M)


def test_quiet_says_nothing(tmp_path, capsys, short_song, model_flags):
    assert cli.main("beats", [*small(short_song, tmp_path / "v.png", model_flags,
                                            "-q")]) == 0
    out, err = capsys.readouterr()
    assert out == "" and [line for line in err.splitlines() if not line.startswith("warning:")] == []
