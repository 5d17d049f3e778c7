"""The run: its folder, its manifest, resuming, and the engine both generate modes share."""

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from . import weights
from .guidance import MakeCutouts, Perceptor, Target, noise_target, parse_prompt, split_prompts
from .models import (ModelError, cell_size, check_clip_name, clip_path, embed_audio, load_clip,
                     load_vqgan, load_wav2clip, read_vqgan_config, whole_cells)
from .optimise import (Optimiser, load_image, noise_image, random_latent, to_frame, zoom_shift)
from .schedule import Segment, audio_window, frame_sources
from .video import FrameWriter, part_path

MANIFEST = "manifest.json"
VERSION = 1


class RunError(RuntimeError):
    """A run folder that cannot be used as asked; str() says why and what to do."""


class RunInterrupted(RuntimeError):
    """Ctrl-C: the run stopped cleanly and can be resumed."""


def chunk_name(index: int, count: int) -> str:
    """A chunk's file name, zero-padded so names sort in segment order at any count."""
    width = max(5, len(str(max(count - 1, 0))))
    return f"chunk_{index:0{width}d}.mp4"


def write_json(path: Path, data: dict) -> None:
    """Writes JSON atomically: a temporary file, fsynced, then renamed over the old one."""
    part = part_path(path)
    with open(part, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)


def _same(key: str, value, old: dict) -> bool:
    """Whether an identity entry matches the old run's (a -sd equal to its drawn seed does)."""
    if key == "seed" and "seed" not in old.get("identity", {}):
        return value == old.get("seed")
    return old.get("identity", {}).get(key) == value


def segment_record(seg: Segment, count: int) -> dict:
    """A segment as the manifest lists it."""
    record = asdict(seg)
    record["chunk"] = chunk_name(seg.index, count) if seg.frames > 0 else None
    return record


class RunFolder:
    """The folder beside the output that holds a run's chunks, states and manifest."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.manifest_path = self.path / MANIFEST

    def read(self) -> dict | None:
        """The manifest, or None when the folder holds no run."""
        if not self.manifest_path.is_file():
            return None
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise RunError(f"{self.manifest_path} is unreadable ({err}); delete the folder or "
                           "rerun with --overwrite") from None

    def write(self, manifest: dict) -> None:
        """Saves the manifest atomically."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.manifest_path, manifest)

    def clear(self) -> None:
        """Removes what a run wrote here (its chunks, states and manifest), nothing else."""
        if not self.path.is_dir():
            return
        for item in self.path.iterdir():
            ours = item.name.startswith(("chunk_", "state_", ".chunk_", ".state_", ".manifest"))
            if item.is_file() and (ours or item.name == MANIFEST):
                item.unlink()

    def start(self, identity: dict, segments: list[Segment], overwrite: bool, seed: int,
              info: dict) -> dict:
        """The manifest to work from: the folder's own when it is the same run, else a new one.

        A run with no finished segment is simply replaced. A new run records `seed`; a resumed
        one keeps the seed it started with. `info` (song path, video path, fps) is recorded
        either way, for combine_mp4.py."""
        old = self.read()
        identity = json.loads(json.dumps(identity))  # tuples become lists, as when read back
        plan = json.loads(json.dumps([segment_record(s, len(segments)) for s in segments]))
        if old is not None and not overwrite and old.get("done"):
            differs = [k for k in identity if not _same(k, identity[k], old)]
            if not differs and old.get("segments") != plan:
                differs = ["segment plan"]
            if differs:
                raise RunError(f"{self.path} holds another run (different {', '.join(differs)}); "
                               "rerun with --overwrite to replace it, or choose another -o")
            old.update(info)
            self.write(old)
            self.remove_leftovers()
            return old
        self.clear()
        manifest = {"version": VERSION, "identity": identity, "seed": seed, "segments": plan,
                    "done": 0, "iterations_done": 0, "state": None, **info}
        self.write(manifest)
        return manifest

    def remove_leftovers(self) -> None:
        """Deletes temporary files an interrupted run left: in its folder, and beside it."""
        leftovers = [*self.path.glob(".*.part*"), *self.path.parent.glob(f".{self.path.name}.*")]
        for item in leftovers:
            item.unlink(missing_ok=True)

    def chunk(self, record: dict) -> Path | None:
        """Path of a segment's chunk (None for a segment with no frames)."""
        return self.path / record["chunk"] if record["chunk"] else None

    def save_state(self, manifest: dict, index: int, state: dict) -> None:
        """Records segment `index` as finished, with the state to continue from."""
        name = f"state_{index:06d}.pt"
        part = part_path(self.path / name)
        torch.save(state, part)
        os.replace(part, self.path / name)
        old = manifest["state"]
        manifest["done"] = index + 1
        manifest["iterations_done"] += manifest["segments"][index]["iterations"]
        manifest["state"] = name
        self.write(manifest)
        if old and old != name:
            (self.path / old).unlink(missing_ok=True)

    def load_state(self, manifest: dict) -> dict | None:
        """The state saved after the last finished segment, or None at the start."""
        if not manifest["state"]:
            return None
        path = self.path / manifest["state"]
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise RunError(f"{path} is unreadable ({type(err).__name__}); rerun with --overwrite "
                           "to start the video again") from None

    def finished_chunks(self, manifest: dict, partial: bool = False) -> list[Path]:
        """The chunks of the finished segments, in order; missing ones are named in the error."""
        records = manifest["segments"][: manifest["done"]] if partial else manifest["segments"]
        if not partial and manifest["done"] < len(records):
            raise RunError(f"{self.path}: only {manifest['done']} of {len(records)} segments are "
                           "finished; rerun the generate command to resume, or join with --partial")
        chunks = [self.chunk(r) for r in records if r["chunk"]]
        missing = [c.name for c in chunks if not c.is_file()]
        if missing:
            raise RunError(f"{self.path}: missing chunk(s) {', '.join(missing[:5])}; rerun the "
                           "generate command with --overwrite to render them again")
        return chunks


def say(quiet: bool, message: str) -> None:
    """A log line that keeps clear of the progress bar, unless quiet."""
    if not quiet:
        tqdm.write(message)


def describe(seg: Segment, count: int) -> str:
    """One line about a segment for the log: time span, steps, frames and goal."""
    goals = "; ".join(f"lyric {g.text!r}" if g.kind == "text" else "audio" for g in seg.goals)
    return (f"[{seg.index + 1}/{count}] {clock(seg.start)}-{clock(seg.end)} "
            f"{seg.iterations} it, {seg.frames} frames: {goals}")


def clock(seconds: float) -> str:
    """M:SS.ss for a log line."""
    return f"{int(seconds // 60)}:{seconds % 60:05.2f}"


class Engine:
    """Renders a schedule of segments into the run folder's chunks, resuming where it stopped."""

    def __init__(self, opts, song, models, folder: RunFolder, manifest: dict,
                 segments: list[Segment]):
        self.opts, self.song, self.models = opts, song, models
        self.folder, self.manifest, self.segments = folder, manifest, segments
        self.width, self.height = models.size
        self.text_cache: dict[str, object] = {}
        torch.manual_seed(manifest["seed"])  # image prompts' cut-outs are random too
        self.style = self._style_targets()

    def log(self, message: str) -> None:
        """A line above the progress bar, unless -q."""
        say(self.opts.quiet, message)

    def _text(self, text: str, weight=1.0, stop=float("-inf")):
        """CLIP target of a text, computed once per distinct text."""
        key = (text, weight, stop)
        if key not in self.text_cache:
            self.text_cache[key] = self.models.perceptor.text_target(text, weight, stop)
        return self.text_cache[key]

    def _style_targets(self) -> list[list]:
        """Style goals for every segment: -p prompt groups (one per '^' phrase), -ip, -nps."""
        o, perceptor = self.opts, self.models.perceptor
        fixed = []
        for item in split_prompts(o.image_prompts):
            path, weight, stop = parse_prompt(item)
            fixed.append(perceptor.image_target(load_image(Path(path), self.width, self.height),
                                                weight, stop))
        dim = self.models.embed_dim
        fixed += [noise_target(s, w, dim, self.models.device)
                  for s, w in zip(o.noise_prompt_seeds, o.noise_prompt_weights)]
        phrases = (o.prompts or "").split("^")
        groups = [[self._text(*parse_prompt(p)) for p in split_prompts(ph)] for ph in phrases]
        return [group + fixed for group in groups]

    def _style_at(self, iteration: int) -> list:
        """The style goals at a global iteration (-cpe cycles the '^' phrases)."""
        every = self.opts.change_prompt_every
        group = (iteration // every) % len(self.style) if every else 0
        return [(t, t.weight) for t in self.style[group]]

    def _segment_targets(self, seg: Segment) -> list:
        """(target, goal) pairs of a segment: CLIP text or Wav2CLIP audio embeddings."""
        pairs = []
        for goal in seg.goals:
            if goal.kind == "text":
                pairs.append((self._text(goal.text), goal))
                continue
            start, end = audio_window(goal, self.song.duration)
            sr = self.song.sr
            clip = self.song.samples[int(start * sr):max(int(end * sr), int(start * sr) + 1)]
            pairs.append((Target(embed_audio(self.models.wav2clip, clip)), goal))
        return pairs

    def _start_optimiser(self):
        """The optimiser at the first unfinished segment, and the picture and step count so far."""
        m, o = self.models, self.opts
        state = self.folder.load_state(self.manifest)
        z = m.initial_latent if state is None else state["optimiser"]["z"]
        opt = Optimiser(m.vqgan, m.perceptor, z.to(m.device), o.optimiser, o.learning_rate,
                        o.init_weight, o.precision, compile_mode=o.compile)
        if state is None:
            return opt, None, 0
        opt.load_state_dict(state["optimiser"])
        return opt, state["image"].to(m.device), state["iteration"]

    def _after_step(self, opt, result, iteration: int) -> None:
        """Preview PNG and loss line every -se steps; the zoom motion every -zse steps."""
        o = self.opts
        if o.save_every and iteration % o.save_every == 0:
            save_preview(result.image, o.preview)
            if not o.quiet:
                self.log(f"step {iteration}: loss {result.loss.item():.4g}")
        if o.zoom_video and iteration >= o.zoom_start and (iteration + 1) % o.zoom_save_every == 0:
            with torch.no_grad():
                moved = zoom_shift(self.models.vqgan.synth(opt.z), o.zoom_scale,
                                   o.zoom_shift_x, o.zoom_shift_y)
                opt.restart(self.models.vqgan.encode(moved))

    def _render_segment(self, seg: Segment, opt, previous, iteration: int, bar):
        """Optimises one segment, streaming its frames into its chunk; returns the last picture."""
        pairs = self._segment_targets(seg)
        continuity = (self.models.perceptor.image_target(previous)
                      if previous is not None else None)
        counts = frame_sources(seg.iterations, seg.frames)
        chunk = self.folder.chunk(self.manifest["segments"][seg.index])
        writer = (FrameWriter(chunk, self.width, self.height, self.opts.fps) if chunk
                  else contextlib.nullcontext())
        n = seg.iterations
        with writer:
            for i in range(n):
                targets = [(t, g.weight_at(i, n)) for t, g in pairs] + self._style_at(iteration)
                if i == 0 and continuity is not None:
                    targets.append((continuity, continuity.weight))
                result = opt.step(targets, i)
                if counts[i]:
                    writer.write(to_frame(result.image, cpu=False), counts[i])
                self._after_step(opt, result, iteration)
                iteration += 1
                bar.update(1)
        return result.image, iteration

    def run(self) -> None:
        """Renders every unfinished segment; Ctrl-C stops cleanly between frames."""
        count, first = len(self.segments), self.manifest["done"]
        if first >= count:
            return
        if first:
            self.log(f"resuming at segment {first + 1} of {count}")
        opt, previous, iteration = self._start_optimiser()
        total = sum(s.iterations for s in self.segments)
        with tqdm(total=total, initial=self.manifest["iterations_done"], unit="it",
                  desc="rendering", disable=self.opts.quiet, dynamic_ncols=True) as bar:
            for seg in self.segments[first:]:
                torch.manual_seed(self.manifest["seed"] + seg.index)
                self.log(describe(seg, count))
                try:
                    previous, iteration = self._render_segment(seg, opt, previous, iteration, bar)
                except KeyboardInterrupt:
                    raise RunInterrupted(
                        f"stopped at segment {seg.index + 1} of {count}; run the same command "
                        "again to resume") from None
                self.folder.save_state(self.manifest, seg.index, {
                    "optimiser": opt.state_dict(), "image": previous.cpu(), "iteration": iteration})


def save_preview(image: torch.Tensor, path: Path) -> None:
    """Writes the current picture as a PNG, atomically (the seed's -o preview)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(path)
    Image.fromarray(to_frame(image).numpy()).save(part, format="PNG")
    os.replace(part, path)


@dataclass
class Models:
    """The loaded networks and what the loop needs to know about them."""

    vqgan: object
    perceptor: object
    wav2clip: object
    device: torch.device
    size: tuple[int, int]  # width, height of the pictures, multiples of the VQGAN cell
    embed_dim: int  # CLIP's embedding width
    initial_latent: torch.Tensor  # (1, e, h, w) where a new run starts


def _given_weights(opts) -> dict[str, Path]:
    """The weight files named on the command line, checked to exist."""
    if bool(opts.vqgan_config) != bool(opts.vqgan_checkpoint):
        raise ModelError("give both -conf and -ckpt (a VQGAN is a yaml config plus a checkpoint)")
    given = {"config": opts.vqgan_config, "ckpt": opts.vqgan_checkpoint,
             "wav2clip": opts.wav2clip_checkpoint}
    given = {key: Path(path) for key, path in given.items() if path}
    for path in given.values():
        if not path.is_file():
            raise ModelError(f"{path} not found; check the path, or leave the flag out to use "
                             "the default model (bash download_models.sh fetches it)")
    return given


def resolve_weights(opts) -> dict[str, Path]:
    """Paths of the three models' files; the registry's defaults are fetched when missing.

    Everything the user named is checked before anything is downloaded."""
    root = weights.checkpoint_dir(opts.checkpoints)
    paths = _given_weights(opts)
    check_clip_name(opts.clip_model)
    if "config" not in paths:
        paths["config"], paths["ckpt"] = weights.fetch(weights.DEFAULT_VQGAN, root, opts.quiet)
    paths["clip"] = clip_path(opts.clip_model, root, opts.quiet)
    if "wav2clip" not in paths:
        (paths["wav2clip"],) = weights.fetch("wav2clip", root, opts.quiet)
    return paths


def picture_size(opts, config: Path) -> tuple[int, int]:
    """-s rounded down to whole cells of the configured VQGAN; too small a size is an error."""
    factor = cell_size(read_vqgan_config(config)[1])
    width, height = whole_cells(opts.size, factor)
    if not width or not height:
        raise ModelError(f"-s {opts.size[0]} {opts.size[1]} is smaller than one {factor}-pixel "
                         f"VQGAN cell; use at least -s {factor} {factor}")
    return width, height


def first_latent(opts, vqgan, size, seed: int, device) -> torch.Tensor:
    """The start latent: -ii picture, -in noise, or random codebook entries (the seed's default)."""
    gen = torch.Generator().manual_seed(seed)
    width, height = size
    if opts.init_image:
        image = load_image(opts.init_image, width, height)
    elif opts.init_noise:
        image = noise_image(opts.init_noise, width, height, gen)
    else:
        return random_latent(vqgan, width, height, gen).to(device)
    with torch.no_grad():
        return vqgan.encode(image.to(device))


def load_models(opts, paths: dict, size: tuple[int, int], device, seed: int) -> Models:
    """Loads VQGAN, CLIP (with the cut-outs) and Wav2CLIP onto the device."""
    vqgan = load_vqgan(paths["config"], paths["ckpt"], device)
    clip_model = load_clip(paths["clip"], device)
    cutouts = MakeCutouts(clip_model.visual.input_resolution, opts.num_cuts, opts.cut_method,
                          opts.cut_power, opts.augments)
    return Models(vqgan, Perceptor(clip_model, cutouts), load_wav2clip(paths["wav2clip"], device),
                  device, size, clip_model.visual.output_dim,
                  first_latent(opts, vqgan, size, seed, device))
