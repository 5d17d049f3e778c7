"""Schedulers: who renders the work, in this process or on Ray workers; events come back in order.

Both take {job: (RenderSpec, samples)} and a list of Work, and yield the renderer's events
(Progress, Preview, Finished) plus Failed when a job cannot go on. The driver alone writes them
down. Ray is imported only by RayScheduler."""

import os
import signal
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..engine.renderer import Finished, Progress, Renderer, RenderSpec, Work, load_for, work_cost
from ..errors import UserError

if TYPE_CHECKING:
    import torch

    from ..options import Options

RETRIES = 3  # times a section is resubmitted after its worker died, before the job fails
WAIT_SECONDS = 1.0  # longest single wait for a worker's next event
PROBE_SECONDS = 300  # bound on a cluster worker's answer about its device
CONNECT_SECONDS = 10  # bound on reaching a cluster's address


class SchedulerError(UserError, RuntimeError):
    """The workers cannot be started or reached; str() says why and what to do."""


@dataclass
class Failed:
    """A job that cannot go on (bad model file, non-finite loss, workers that keep dying)."""

    job: int
    message: str


def _models_key(spec: RenderSpec) -> tuple:
    """What decides which loaded networks a spec can share."""
    return (spec.weights, spec.device, spec.size, spec.num_cuts, spec.cut_method, spec.cut_power,
            spec.augments, spec.threads)


def reachable(address: str, seconds: float = CONNECT_SECONDS) -> None:
    """Fails fast (ConnectionError) when a host:port cluster address does not answer: ray.init
    would retry it for minutes. Other forms ('auto', ray://...) are left to Ray."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "/" in address:
        return
    with socket.create_connection((host, int(port)), timeout=seconds):
        pass


def restore(terminate, visible: str | None) -> None:
    """Puts back this process's SIGTERM handler (ray.init installs its own) and GPU list."""
    if threading.current_thread() is threading.main_thread() and terminate is not None:
        signal.signal(signal.SIGTERM, terminate)
    if visible is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible


def choose_precision(device, size: tuple[int, int], cuts: int):
    """What --precision auto means on a device, and why (a precision.Choice; run where the
    device is)."""
    from ..engine.precision import decide

    return decide(device, size, cuts)


class Worker:
    """Renders pieces of work one after the other, keeping the loaded networks (and the last
    job's renderer) while the next piece can share them: in this process, or as a Ray actor."""

    def __init__(self):
        self.models: dict = {}
        self.renderer: tuple | None = None  # (job, Renderer) of the last piece

    def _models(self, spec: RenderSpec):
        """The networks a spec needs, loaded once and kept while specs share them."""
        key = _models_key(spec)
        if key not in self.models:
            self.models, self.renderer = {}, None  # free the old networks before loading
            self.models = {key: load_for(spec)}
        return self.models[key]

    def render(self, spec: RenderSpec, samples, work: Work) -> Iterator:
        """Yields the events of one piece of work."""
        models = self._models(spec)
        if self.renderer is None or self.renderer[0] != work.job:
            self.renderer = (work.job, Renderer(spec, samples, models))
        yield from self.renderer[1].run(work)

    def step_seconds(self, spec: RenderSpec, samples) -> float:
        """Seconds one of the spec's steps takes here (timed on a renderer of its own, so the
        render that follows draws the same random numbers as without it)."""
        return Renderer(spec, samples, self._models(spec)).step_seconds()

    def close(self) -> None:
        """Frees the networks."""
        self.models, self.renderer = {}, None


class InProcess:
    """Renders every piece of work here, one after the other, in song order."""

    def __init__(self):
        self.worker = Worker()

    def placement(self, placement):
        """The placement, as this process renders it."""
        return placement

    def precision(self, device, size: tuple[int, int], cuts: int):
        """--precision auto on this process's device (a precision.Choice)."""
        return choose_precision(device, size, cuts)

    def step_seconds(self, spec: RenderSpec, samples) -> float:
        """Seconds a step of the spec takes on this process's worker."""
        return self.worker.step_seconds(spec, samples)

    def run(self, jobs: dict, works: list[Work]) -> Iterator:
        """Yields the events of every work; a job that fails yields Failed and is skipped."""
        failed = set()
        for work in sorted(works, key=lambda w: (w.job, w.first, not w.repair)):
            if work.job in failed:
                continue
            spec, samples = jobs[work.job]
            try:
                yield from self.worker.render(spec, samples, work)
            except UserError as err:
                failed.add(work.job)
                yield Failed(work.job, str(err))

    def close(self) -> None:
        """Frees the networks."""
        self.worker.close()


@dataclass(frozen=True)
class Placement:
    """Where the work runs."""

    device: "torch.device | str"  # an in-process worker's device (its type for Ray workers)
    workers: int  # sections rendered at once
    ray: str | None  # None: in this process; 'local', 'auto' or a cluster address
    gpus: tuple[int, ...]  # GPUs of a local Ray instance


def place(opts: "Options") -> Placement:
    """Chooses the device and the workers from -cd, -gid, --workers and --ray.

    A cluster's device is not known here (device None): the cluster says what it has."""
    import torch

    from ..models.networks import pick_device

    if opts.ray not in (None, "local"):
        return Placement(None, opts.workers or 0, opts.ray, ())
    gpus = opts.gpu_id
    if opts.cuda_device or len(gpus) == 1 or not torch.cuda.is_available():
        device = pick_device(opts.cuda_device, gpus[0])
        if len(gpus) > 1:
            warnings.warn(f"-gid {','.join(map(str, gpus))}: no GPU found; the workers share "
                          "the CPU")
        workers = opts.workers or 1
        if device.type == "cuda" and workers > 1 and opts.ray in (None, "local"):
            raise SchedulerError(f"--workers {workers} on one GPU: give one GPU per worker, e.g. "
                        f"-gid {','.join(map(str, range(workers)))}")
        gpus = (device.index or 0,) if device.type == "cuda" else ()
    else:
        count = torch.cuda.device_count()
        absent = [g for g in gpus if g >= count]
        if absent:
            raise SchedulerError(f"-gid {','.join(map(str, gpus))}: this machine has {count} GPU(s), "
                        f"no GPU {absent[0]}; list GPUs 0-{count - 1}")
        device = torch.device("cuda", gpus[0])
        workers = opts.workers or len(gpus)
        if workers > len(gpus) and opts.ray in (None, "local"):
            raise SchedulerError(f"--workers {workers} with {len(gpus)} GPUs: one worker per GPU")
    if device.type == "mps" and workers > 1:
        raise SchedulerError("several workers need CUDA GPUs or the CPU, not Apple MPS; use --workers 1")
    ray = opts.ray or ("local" if workers > 1 else None)
    return Placement(device, workers, ray, gpus)


def makespan(costs: list[int], workers: int) -> int:
    """Steps until the last of these pieces of work ends when `workers` take them longest first,
    each the next free worker (as the schedulers hand them out)."""
    loads = [0] * max(1, workers)
    for cost in sorted(costs, reverse=True):
        loads[loads.index(min(loads))] += cost
    return max(loads)


def make_scheduler(placement: Placement):
    """In this process for one worker, else Ray (a local instance, or a cluster)."""
    if placement.ray is None:
        return InProcess()
    device_type = placement.device.type if placement.device is not None else None
    return RayScheduler(placement.ray, placement.workers, list(placement.gpus), device_type)


@dataclass
class _Flight:
    """A piece of work, the actor rendering it, and what has come back of it."""

    work: Work
    retries: int = 0
    actor: object = None  # None until submitted
    last: Finished | None = None  # the last segment received
    progress: int = 0  # steps reported since then


class RayScheduler:
    """Renders work on Ray actors, one section at a time each, streaming its segments back.

    Each actor is a Worker: it keeps its networks loaded from one section to the next, so a
    song of many sections loads the models once per worker, not once per section. address
    None/'local' starts a Ray instance here with `workers` actors (one GPU each when `gpus` lists
    them, else one CPU each); an address (or 'auto') joins a cluster and starts `workers` actors
    there, or one per GPU (else per CPU) of the cluster. `worker` is the actor's class (the
    benchmark times Ray with a stand-in)."""

    def __init__(self, address: str | None, workers: int, gpus: list[int] | None = None,
                 device_type: str | None = "cpu", worker=Worker):
        try:
            import ray
        except ImportError:
            raise SchedulerError("Ray is not installed; pip install -r requirements.txt") from None
        self.ray = ray
        self.local = address in (None, "local")
        package = str(Path(__file__).resolve().parents[1])  # the package root, music2video/
        env = {"py_modules": [package], "env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}}
        terminate = signal.getsignal(signal.SIGTERM)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        try:
            if self.local:
                if gpus:  # the local instance sees these GPUs only
                    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
                ray.init(address="local", num_cpus=max(workers, 1), num_gpus=len(gpus or ()),
                         include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                         runtime_env=env)
            else:
                reachable(address)
                ray.init(address=address, log_to_driver=False, logging_level="ERROR",
                         runtime_env=env)
        except Exception as err:  # ConnectionError, RuntimeError, ValueError ... from ray.init
            where = "start Ray here" if self.local else f"join the Ray cluster at {address}"
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise SchedulerError(f"could not {where} ({reason}); check `ray status`, or run "
                                 "with --workers 1 to render in this process") from None
        finally:
            restore(terminate, visible)
        resources = ray.cluster_resources()
        self.gpu = device_type == "cuda" if self.local else resources.get("GPU", 0) > 0
        kind = "GPU" if self.gpu else "CPU"
        slots = max(1, int(resources.get(kind, 1)))
        if workers > slots:  # an actor that cannot be placed would wait for ever
            warnings.warn(f"--workers {workers}: the Ray cluster has {slots} {kind}(s); "
                          f"{slots} workers render")
        self.count = min(workers, slots) if workers else slots
        self.worker = ray.remote(worker).options(num_gpus=1 if self.gpu else 0, num_cpus=1,
                                                 max_restarts=0)
        self.actors: list = []  # started and not known to be dead

    def placement(self, placement):
        """The placement with a cluster's device filled in (its GPUs, else its CPUs)."""
        import torch

        if placement.device is not None:
            return placement
        return replace(placement, device=torch.device("cuda" if self.gpu else "cpu"))

    def precision(self, device, size: tuple[int, int], cuts: int):
        """--precision auto where the work runs: here for a local instance, else on a worker
        (a precision.Choice)."""
        if self.local:
            return choose_precision(device, size, cuts)
        probe = self.ray.remote(choose_precision).options(num_gpus=1 if self.gpu else 0,
                                                          num_cpus=1)
        try:
            return self.ray.get(probe.remote(device.type, size, cuts), timeout=PROBE_SECONDS)
        except self.ray.exceptions.GetTimeoutError:
            raise SchedulerError(f"no worker of the cluster answered within {PROBE_SECONDS} s; "
                                 "check `ray status`, or give --precision") from None

    def step_seconds(self, spec: RenderSpec, samples) -> float:
        """Seconds a step of the spec takes on a worker (which keeps the networks it loaded
        for the render that follows)."""
        if not self.actors:
            self.actors.append(self.worker.remote())
        try:
            return self.ray.get(self.actors[0].step_seconds.remote(spec, samples),
                                timeout=PROBE_SECONDS)
        except self.ray.exceptions.GetTimeoutError:
            raise SchedulerError(f"no worker of the cluster answered within {PROBE_SECONDS} s; "
                                 "check `ray status`") from None

    def _submit(self, refs: dict, flight: _Flight, idle: list):
        """Starts a piece of work on an idle actor (a new one while there are fewer than
        `count`); returns its generator."""
        if idle:
            flight.actor = idle.pop()
        else:
            flight.actor = self.worker.remote()
            self.actors.append(flight.actor)
        spec_ref, samples_ref = refs[flight.work.job]
        method = flight.actor.render.options(num_returns="streaming")
        return method.remote(spec_ref, samples_ref, flight.work)

    def _drop(self, actor) -> None:
        """Stops an actor (dead, or rendering work nobody wants any more)."""
        self.actors.remove(actor)
        self.ray.kill(actor)

    def run(self, jobs: dict, works: list[Work]) -> Iterator:
        """Yields events as they arrive; resubmits a section whose worker died from the last
        state received, so at most the segment in progress is rendered again."""
        ray = self.ray
        refs = {job: (ray.put(spec), ray.put(samples)) for job, (spec, samples) in jobs.items()}
        queue = [_Flight(w) for w in sorted(works, key=lambda w: -work_cost(jobs[w.job][0], w))]
        idle = list(self.actors)
        flights: dict = {}
        failed: set[int] = set()
        while queue or flights:
            while queue and (idle or len(self.actors) < self.count):
                flight = queue.pop(0)  # longest first; a resubmitted rest goes first
                if flight.work.job not in failed:
                    flights[self._submit(refs, flight, idle)] = flight
            if not flights:
                continue
            ready, _ = ray.wait(list(flights), num_returns=1, timeout=WAIT_SECONDS)
            for gen in ready:
                yield from self._receive(gen, flights, queue, idle, failed)

    def _receive(self, gen, flights: dict, queue: list, idle: list, failed: set) -> Iterator:
        """Takes the next event of one generator and handles its end or its failure."""
        ray, flight = self.ray, flights[gen]
        try:
            event = ray.get(next(gen))
        except StopIteration:
            del flights[gen]
            idle.append(flight.actor)
            return
        except ray.exceptions.RayTaskError as err:
            del flights[gen]
            idle.append(flight.actor)  # the actor lives on; its work raised
            cause = err.cause if isinstance(err.cause, UserError) else err
            yield from self._fail(flight.work.job, str(cause).strip().splitlines()[-1], flights,
                                  failed)
            return
        except ray.exceptions.RayError as err:  # the actor died: go on from the last state
            del flights[gen]
            self._drop(flight.actor)
            if flight.retries >= RETRIES:
                yield from self._fail(flight.work.job, f"a worker died {RETRIES + 1} times "
                                      f"rendering section {flight.work.section + 1} "
                                      f"({type(err).__name__}); check the workers' logs "
                                      "(`ray logs`), then run the same command to resume",
                                      flights, failed)
                return
            work = self._remaining(flight)
            if work is not None:
                yield Progress(work.job, -flight.progress)  # those steps are rendered again
                queue.insert(0, _Flight(work, retries=flight.retries + 1))
            return
        if isinstance(event, Finished):
            flight.last, flight.progress = event, 0
        elif isinstance(event, Progress):
            flight.progress += event.steps
        yield event

    @staticmethod
    def _remaining(flight: _Flight) -> Work | None:
        """The rest of a piece of work after the last segment received (None: nothing left)."""
        work, last = flight.work, flight.last
        if last is None:
            return work
        if last.index >= work.last:
            return None
        return replace(work, first=last.index + 1, state=last.state)

    def _fail(self, job: int, message: str, flights: dict, failed: set) -> Iterator:
        """Marks a job failed and stops the actors rendering its other work (a running actor
        call cannot be cancelled: the actor goes, and a new one takes its place if needed)."""
        failed.add(job)
        for gen, flight in list(flights.items()):
            if flight.work.job == job:
                del flights[gen]
                self._drop(flight.actor)
        yield Failed(job, message)

    def close(self) -> None:
        """Disconnects (and stops the local instance; a cluster's actors end with the driver)."""
        self.ray.shutdown()
