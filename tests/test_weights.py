"""Tests for music2video.models.weights: the registry, the weights folder, and download_models.sh.

Nothing here reaches the internet: URLs are pointed at 127.0.0.1 (a closed port or the
`http_files` server). The one run of the real script relies on this machine and CI having no
network except the package registries, so the real URLs fail fast (name resolution fails)."""

import hashlib
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import clip
import pytest
from clip.clip import _MODELS

from music2video.models import download, networks, weights
from music2video.testing import tiny

REPO = Path(__file__).resolve().parents[1]
FIX = "connect to the internet and run again"
VQGANS = ["vqgan_imagenet_f16_16384", "vqgan_imagenet_f16_1024", "vqgan_gumbel_f8_8192",
          "wikiart_16384"]
DEFAULT_FILES = ["vqgan_imagenet_f16_16384.yaml", "vqgan_imagenet_f16_16384.ckpt", "ViT-B-32.pt",
                 "Wav2CLIP.pt"]


@pytest.fixture(autouse=True)
def registry_sources(monkeypatch):
    """These tests point the registry's own URLs at local servers: no mirror in front of them."""
    monkeypatch.delenv(weights.MIRROR_VAR, raising=False)


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def redirect(monkeypatch, url_of) -> dict[str, weights.Model]:
    """Replaces the registry by one whose every file has the one URL url_of(model, file)."""
    patched = {name: replace(m, files=tuple(replace(f, url=url_of(m, f), mirrors=())
                                            for f in m.files))
               for name, m in weights.registry().items()}
    monkeypatch.setattr(weights, "registry", lambda: patched)
    return patched


def default_files() -> list[weights.WeightFile]:
    """The files `bash download_models.sh` fetches with no arguments."""
    return [f for name in weights.DEFAULT_FETCH for f in weights.lookup(name).files]


def error_lines(stderr: str) -> list[str]:
    """The lines of stderr, which must all be one-line errors."""
    lines = stderr.splitlines()
    assert all(line.startswith("error: ") for line in lines), stderr
    assert "Traceback" not in stderr
    return lines


def assert_one_line_per_file(lines, root: Path, files) -> None:
    """Exactly one error line per file, naming it and its folder, then the fix."""
    assert len(lines) == len(files)
    for file in files:
        mine = [line for line in lines if f" {file.filename} into {root} (" in line]
        assert len(mine) == 1, (file.filename, lines)
        assert FIX in mine[0]


# The registry

def test_registry_vqgans():
    models_ = weights.registry()
    assert weights.DEFAULT_VQGAN == VQGANS[0]
    assert weights.DEFAULT_FETCH == (VQGANS[0], "ViT-B/32", "wav2clip")
    for name in VQGANS:
        model = models_[name]
        assert model.kind == "vqgan"
        assert [f.filename for f in model.files] == [f"{name}.yaml", f"{name}.ckpt"]
        assert all(re.match(r"https?://", f.url) for f in model.files)
        assert model.files[0].url != model.files[1].url
    assert "a7530b09fed84f80a887" in models_[VQGANS[0]].files[1].url  # the seed's share
    assert sorted(m.name for m in models_.values() if m.kind == "vqgan") == sorted(VQGANS)


def test_registry_mirrors_in_order():
    heibox = "https://heibox.uni-heidelberg.de/d/{}/files/?p=%2F{}&dl=1"
    expected = {
        VQGANS[0]: [heibox.format("a7530b09fed84f80a887", "{path}"),
                    "http://mirror.io.community/blob/vqgan/vqgan_imagenet_f16_16384.{ext}",
                    "https://github.com/mehdidc/feed_forward_vqgan_clip/releases/download/0.1/"
                    "vqgan_imagenet_f16_16384.{ext}"],
        VQGANS[1]: [heibox.format("8088892a516d4e3baf92", "{path}"),
                    "http://mirror.io.community/blob/vqgan/vqgan_imagenet_f16_1024.{ext}"],
        VQGANS[2]: [heibox.format("2e5662443a6b4307b470", "{path}")],
        VQGANS[3]: ["https://github.com/pixray/pixray/releases/download/v1.7.1/"
                    "vqgan_wikiart_16384.{ext}"],  # the original host is gone
    }
    paths = {"yaml": "configs%2Fmodel.yaml", "ckpt": "ckpts%2Flast.ckpt"}
    for name, urls in expected.items():
        for file, ext in zip(weights.lookup(name).files, ("yaml", "ckpt")):
            assert list(file.urls) == [u.format(path=paths[ext], ext=ext) for u in urls]
            assert file.url == file.urls[0] and file.sha256 is None
    assert weights.lookup("wav2clip").files[0].urls == (weights.WAV2CLIP_URL,)


def test_registry_clip_models_with_their_digests():
    models_ = weights.registry()
    assert clip.available_models()  # else this test checks nothing
    for name in clip.available_models():
        file, = models_[name].files
        url = _MODELS[name]
        assert models_[name].kind == "clip"
        assert (file.url, file.filename) == (url, url.rsplit("/", 1)[1])
        assert file.sha256 == url.split("/")[-2] and re.fullmatch(r"[0-9a-f]{64}", file.sha256)
    assert models_["ViT-B/32"].files[0].sha256 == (
        "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af")


def test_registry_wav2clip_and_unique_filenames():
    file, = weights.lookup("wav2clip").files
    assert (file.filename, file.url) == ("Wav2CLIP.pt", weights.WAV2CLIP_URL)
    filenames = [f.filename for m in weights.registry().values() for f in m.files]
    assert len(filenames) == len(set(filenames))  # one folder holds them all


def test_lookup_unknown_name():
    with pytest.raises(KeyError) as err:
        weights.lookup("nope")
    message = err.value.args[0]
    assert message.startswith("Model nope not found; available models = ")
    assert all(name in message for name in [*VQGANS, "ViT-B/32", "wav2clip"])


# The weights folder

def test_the_per_user_folder_follows_the_platform(monkeypatch, tmp_path):
    monkeypatch.delenv("MUSIC2VIDEO_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    assert weights.user_cache() == tmp_path / "me" / ".cache" / "music2video"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.user_cache() == tmp_path / "xdg" / "music2video"
    monkeypatch.setenv("MUSIC2VIDEO_HOME", str(tmp_path / "home"))
    assert weights.user_cache() == tmp_path / "home"


def test_the_weights_folder_lookup_order(monkeypatch, tmp_path):
    """--checkpoints, else $MUSIC2VIDEO_CHECKPOINTS; else ./checkpoints when it holds every file
    of the model (the seed's layout); else the per-user folder, where downloads go."""
    monkeypatch.delenv(weights.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    home = weights.user_cache()
    assert weights.model_dir(VQGANS[0]) == home and weights.checkpoint_dir() == home
    seed_dir = tmp_path / "checkpoints"
    seed_dir.mkdir()
    (seed_dir / f"{VQGANS[0]}.yaml").write_text("x")  # one of the two files: not enough
    assert weights.model_dir(VQGANS[0]) == home
    (seed_dir / f"{VQGANS[0]}.ckpt").write_text("x")
    assert weights.model_dir(VQGANS[0]) == Path("checkpoints")
    assert weights.model_dir("wav2clip") == home  # not there: the per-user folder
    monkeypatch.setenv(weights.ENV_VAR, "")
    assert weights.model_dir(VQGANS[0]) == Path("checkpoints")
    monkeypatch.setenv(weights.ENV_VAR, str(tmp_path / "env"))
    assert weights.model_dir(VQGANS[0]) == tmp_path / "env" == weights.checkpoint_dir()
    assert weights.model_dir(VQGANS[0], tmp_path / "flag") == tmp_path / "flag"


def test_a_clip_file_in_clips_own_cache_is_used_when_its_checksum_matches(monkeypatch,
                                                                         tmp_path, no_download):
    body = b"openai clip weights"
    digest = hashlib.sha256(body).hexdigest()
    model = weights.lookup("ViT-B/32")
    file = replace(model.files[0], sha256=digest)
    monkeypatch.setattr(weights, "lookup", lambda name: replace(model, files=(file,)))
    monkeypatch.setattr(weights, "CLIP_CACHE", tmp_path / "clip")
    monkeypatch.chdir(tmp_path)
    cached = tmp_path / "clip" / file.filename
    cached.parent.mkdir()
    cached.write_bytes(body)
    assert weights.clip_path("ViT-B/32") == cached
    cached.write_bytes(b"another file")  # the wrong checksum: not used
    monkeypatch.setattr(weights, "fetch", lambda *a, **k: [tmp_path / "fetched.pt"])
    assert weights.clip_path("ViT-B/32") == tmp_path / "fetched.pt"


def test_main_lists_where_each_model_is(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(weights.ENV_VAR, str(tmp_path))
    (tmp_path / "Wav2CLIP.pt").write_bytes(b"present")
    assert weights.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"weights folder: {tmp_path} (downloads go here")
    listing = {line.split()[0]: line for line in lines[1:]}
    assert f" {tmp_path} " in listing["wav2clip"] and " missing " in listing[VQGANS[0]]


# ensure

@pytest.fixture
def no_download(monkeypatch):
    """Makes any download fail the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"download called: {args}")

    monkeypatch.setattr(download, "download", refuse)


def test_ensure_keeps_an_existing_file(tmp_path, no_download):
    path = tmp_path / "m.yaml"
    path.write_bytes(b"model: {}")
    assert weights.ensure(weights.WeightFile("m.yaml", "http://x.invalid/m.yaml"), tmp_path) == path


def test_ensure_keeps_a_file_whose_digest_matches(tmp_path, no_download):
    path = tmp_path / "m.pt"
    path.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    file = weights.WeightFile("m.pt", "http://x.invalid/m.pt", digest)
    assert weights.ensure(file, tmp_path) == path


def test_ensure_refetches_a_file_whose_digest_does_not_match(tmp_path, http_files):
    http_files.files["/m.pt"] = b"the right weights"
    path = tmp_path / "m.pt"
    path.write_bytes(b"stale")
    file = weights.WeightFile("m.pt", f"{http_files.url}/m.pt",
                              hashlib.sha256(b"the right weights").hexdigest())
    with pytest.warns(UserWarning, match="downloading it again"):
        assert weights.ensure(file, tmp_path, quiet=True) == path
    assert path.read_bytes() == b"the right weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == [weights.STAMPS, "m.pt"]


# ensure: files already in the folder are checked before they are trusted

HTML_404 = (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
            b"<body><h1>Not Found</h1>\n<p>Error: the share has expired</p></body></html>\n")


def yaml_file(url: str) -> weights.WeightFile:
    """The default VQGAN's yaml, fetched from url."""
    return weights.WeightFile(f"{VQGANS[0]}.yaml", url)


def test_ensure_replaces_an_html_page_saved_as_the_yaml(tmp_path, tiny_models, http_files):
    # The seed's curl -L saves an error page under the final name; our download never does,
    # but a file fetched by hand can be one.
    http_files.files["/m.yaml"] = tiny_models["vqgan_config"].read_bytes()
    path = tmp_path / f"{VQGANS[0]}.yaml"
    path.write_bytes(HTML_404)
    with pytest.warns(UserWarning, match=rf"{re.escape(str(path))} is not a taming VQGAN config "
                                         r"\(.+\); downloading it again"):
        got = weights.ensure(yaml_file(f"{http_files.url}/m.yaml"), tmp_path,
                             verify=networks.read_vqgan_config, quiet=True)
    assert got == path and path.read_bytes() == tiny_models["vqgan_config"].read_bytes()
    assert networks.read_vqgan_config(path)[0] == networks.VQMODEL


def test_ensure_names_a_broken_file_it_cannot_replace(tmp_path):
    path = tmp_path / f"{VQGANS[0]}.yaml"
    path.write_bytes(HTML_404)
    dead = closed_port_url()
    with pytest.warns(UserWarning), pytest.raises(download.DownloadError) as err:
        weights.ensure(yaml_file(f"{dead}/m.yaml"), tmp_path, verify=networks.read_vqgan_config,
                       quiet=True)
    message = str(err.value)
    assert message.startswith(f"{path} is not a taming VQGAN config (")
    assert f", and cannot download {path.name} into {tmp_path} (" in message and FIX in message
    assert err.value.failures[0][0] == f"{dead}/m.yaml"
    assert "\n" not in message and path.read_bytes() == HTML_404


def test_ensure_replaces_a_file_whose_checksum_is_wrong(tmp_path, http_files):
    http_files.files["/m.pt"] = b"the right weights"
    path = tmp_path / "m.pt"
    path.write_bytes(b"a stale copy")
    file = weights.WeightFile("m.pt", f"{http_files.url}/m.pt",
                              hashlib.sha256(b"the right weights").hexdigest())
    with pytest.warns(UserWarning, match=r"m\.pt has checksum [0-9a-f]{12}, not [0-9a-f]{12}"):
        weights.ensure(file, tmp_path, quiet=True)
    assert path.read_bytes() == b"the right weights"


def test_a_verified_file_is_checked_once(tmp_path, no_download):
    path = tmp_path / f"{VQGANS[0]}.yaml"
    path.write_bytes(b"model: {}")
    checked = []
    file = yaml_file("http://x.invalid/m.yaml")
    for _ in range(3):
        assert weights.ensure(file, tmp_path, verify=checked.append) == path
    assert checked == [path]  # remembered by size and modification time
    path.write_bytes(b"model: {params: {}}")  # changed: checked again
    weights.ensure(file, tmp_path, verify=checked.append)
    assert checked == [path, path]


def test_a_file_with_a_digest_is_hashed_once(tmp_path, monkeypatch, no_download):
    path = tmp_path / "m.pt"
    path.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    file = weights.WeightFile("m.pt", "http://x.invalid/m.pt", digest)
    hashed = []
    real = download.sha256sum
    monkeypatch.setattr(download, "sha256sum", lambda p: hashed.append(p) or real(p))
    for _ in range(3):
        weights.ensure(file, tmp_path)
    assert hashed == [path]


def test_a_stamp_is_not_trusted_for_another_check(tmp_path, http_files):
    # A stamp records which check the file passed: a new digest in the registry re-checks it.
    http_files.files["/m.pt"] = b"new weights"
    path = tmp_path / "m.pt"
    path.write_bytes(b"old weights")
    old = weights.WeightFile("m.pt", f"{http_files.url}/m.pt",
                             hashlib.sha256(b"old weights").hexdigest())
    weights.ensure(old, tmp_path)
    new = replace(old, sha256=hashlib.sha256(b"new weights").hexdigest())
    with pytest.warns(UserWarning, match="downloading it again"):
        weights.ensure(new, tmp_path, quiet=True)
    assert path.read_bytes() == b"new weights"


def test_fetch_falls_back_to_a_mirror(monkeypatch, tmp_path, tiny_models, http_files):
    http_files.files["/mirror/w.pt"] = tiny_models["wav2clip"].read_bytes()
    dead = closed_port_url()
    model = weights.lookup("wav2clip")
    mirrored = replace(model, files=(replace(model.files[0], url=f"{dead}/w.pt",
                                             mirrors=(f"{http_files.url}/mirror/w.pt",)),))
    monkeypatch.setattr(weights, "registry", lambda: {"wav2clip": mirrored})
    (path,) = weights.fetch("wav2clip", tmp_path, quiet=True)
    assert path.read_bytes() == tiny_models["wav2clip"].read_bytes()


# download_models.sh, in process

def test_main_offline_one_line_per_missing_file(monkeypatch, tmp_path, capsys):
    dead = closed_port_url()
    redirect(monkeypatch, lambda m, f: f"{dead}/{f.filename}")
    assert weights.main(["--checkpoints", str(tmp_path)]) != 0
    out, err = capsys.readouterr()
    assert out == ""
    assert [f.filename for f in default_files()] == DEFAULT_FILES
    assert_one_line_per_file(error_lines(err), tmp_path, default_files())
    assert list(tmp_path.iterdir()) == []  # no final names, no .part files


def test_main_unknown_name(tmp_path, capsys, no_download):
    assert weights.main(["--checkpoints", str(tmp_path), "nope"]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("error: Model nope not found; available models")


@pytest.fixture(scope="module")
def gumbel_ckpt(tmp_path_factory):
    """A tiny GumbelVQ checkpoint: sound, but not for the VQModel config."""
    return tiny.write_vqgan(tmp_path_factory.mktemp("gumbel"), gumbel=True, name="g")[1]


def serve_defaults(monkeypatch, http_files, tiny_models, ckpt_bytes=None):
    """Serves the tiny vqgan.yaml/.ckpt and wav2clip.pt under the default models' URLs."""
    http_files.files.update({
        "/vqgan.yaml": tiny_models["vqgan_config"].read_bytes(),
        "/vqgan.ckpt": ckpt_bytes or tiny_models["vqgan_checkpoint"].read_bytes(),
        "/wav2clip.pt": tiny_models["wav2clip"].read_bytes()})
    served = {f"{VQGANS[0]}.yaml": "/vqgan.yaml", f"{VQGANS[0]}.ckpt": "/vqgan.ckpt",
              "Wav2CLIP.pt": "/wav2clip.pt"}
    dead = closed_port_url()
    redirect(monkeypatch, lambda m, f: http_files.url + served[f.filename]
             if f.filename in served else f"{dead}/{f.filename}")


def test_fetch_from_a_server_verifies_and_renames(monkeypatch, tmp_path, tiny_models, http_files,
                                                   capsys):
    serve_defaults(monkeypatch, http_files, tiny_models)
    checked = []
    for name in ("load_vqgan", "read_vqgan_config", "load_wav2clip"):
        real = getattr(networks, name)
        monkeypatch.setattr(networks, name, lambda *a, real=real, name=name:
                            checked.append((name, Path(a[-1]).name)) or real(*a))

    code = weights.main(["--checkpoints", str(tmp_path), "-q", VQGANS[0], "wav2clip"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    names = [f"{VQGANS[0]}.yaml", f"{VQGANS[0]}.ckpt", "Wav2CLIP.pt"]
    assert out.splitlines() == [f"ok  {tmp_path / n}" for n in names]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([weights.STAMPS, *names])
    assert (tmp_path / names[1]).read_bytes() == tiny_models["vqgan_checkpoint"].read_bytes()
    assert (tmp_path / names[2]).read_bytes() == tiny_models["wav2clip"].read_bytes()
    # each file passed its structural check while it was still a .part file
    assert [c for c in checked if c[1].endswith(".part")] == [
        ("read_vqgan_config", f"{names[0]}.part"), ("load_vqgan", f"{names[1]}.part"),
        ("load_wav2clip", f"{names[2]}.part")]
    assert networks.load_vqgan(tmp_path / names[0], tmp_path / names[1]).factor == 4


@pytest.mark.parametrize("kind, reason", [("garbage", "corrupt or truncated"),
                                          ("gumbel", "does not match its config"),
                                          ("truncated", "corrupt or truncated")])
def test_corrupt_download_is_not_kept(monkeypatch, tmp_path, tiny_models, http_files, gumbel_ckpt,
                                      capsys, kind, reason):
    whole = tiny_models["vqgan_checkpoint"].read_bytes()
    served = {"garbage": os.urandom(50_000), "gumbel": gumbel_ckpt.read_bytes(),
              "truncated": whole[:len(whole) // 2]}[kind]
    serve_defaults(monkeypatch, http_files, tiny_models, ckpt_bytes=served)

    assert weights.main(["--checkpoints", str(tmp_path), "-q", VQGANS[0]]) == 1
    out, err = capsys.readouterr()
    line, = error_lines(err)
    ckpt = tmp_path / f"{VQGANS[0]}.ckpt"
    assert line.startswith(f"error: cannot download {ckpt.name} into {tmp_path} (")
    assert reason in line and FIX in line
    assert out == f"ok  {tmp_path / f'{VQGANS[0]}.yaml'}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [weights.STAMPS, f"{VQGANS[0]}.yaml"]


# download_models.sh, as users run it

@pytest.mark.slow
def test_download_models_sh_offline(tmp_path):
    # Assumes no network beyond the package registries (true here and in CI): the real URLs
    # fail at name resolution or connection, quickly.
    env = {k: v for k, v in os.environ.items() if k != weights.ENV_VAR} | {"PYTHON": sys.executable}
    start = time.monotonic()
    done = subprocess.run(["bash", "download_models.sh", "--checkpoints", str(tmp_path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - start
    assert elapsed < 30
    assert done.returncode != 0
    assert done.stdout == ""
    assert_one_line_per_file(error_lines(done.stderr), tmp_path, default_files())
    assert list(tmp_path.iterdir()) == []


def test_download_models_replaces_a_broken_file(monkeypatch, tmp_path, tiny_models, http_files,
                                                capsys):
    # The reproduction: an HTML page saved as the .yaml failed every run, and
    # download_models.sh, which the message pointed to, changed nothing.
    serve_defaults(monkeypatch, http_files, tiny_models)
    yaml = tmp_path / f"{VQGANS[0]}.yaml"
    yaml.write_bytes(HTML_404)
    assert weights.main(["--checkpoints", str(tmp_path), "-q", VQGANS[0]]) == 0
    out, err = capsys.readouterr()
    assert err.startswith(f"warning: {yaml} is not a taming VQGAN config (")
    assert err.endswith("; downloading it again\n") and err.count("\n") == 1
    assert out.splitlines() == [f"ok  {yaml}", f"ok  {tmp_path / f'{VQGANS[0]}.ckpt'}"]
    assert yaml.read_bytes() == tiny_models["vqgan_config"].read_bytes()
    # the next run trusts both files without reading the checkpoint again
    monkeypatch.setattr(networks, "load_vqgan", lambda *a: pytest.fail("checked again"))
    assert weights.main(["--checkpoints", str(tmp_path), "-q", VQGANS[0]]) == 0


def test_workers_starting_together_download_a_file_once(tmp_path, monkeypatch):
    """Two workers on one machine (threads here) asking for the same missing file."""
    import threading
    import time

    from music2video.models import download as download_module

    calls = []

    def slow_download(urls, dest, **kwargs):
        calls.append(dest)
        time.sleep(0.3)
        dest.write_bytes(b"weights")
        return dest

    monkeypatch.setattr(download_module, "download", slow_download)
    file = weights.WeightFile("w.bin", "http://127.0.0.1:9/w.bin")
    results = []
    threads = [threading.Thread(target=lambda: results.append(weights.ensure(file, tmp_path)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [tmp_path / "w.bin"] * 2
    assert len(calls) == 1
