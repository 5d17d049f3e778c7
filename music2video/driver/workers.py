"""Schedulers: who renders the work, in this process or on Ray workers; events come back in order.

Both take {job: (RenderSpec, samples)} and a list of Work, and yield the renderer's events
(Progress, Preview, Finished) plus Failed when a job cannot go on. The driver alone writes them
down (a worker that sees the run folder has encoded its chunk there, for the driver to rename).
Ray is imported only by RayScheduler (and by a Worker that runs as a Ray actor)."""

import contextlib
import math
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..engine.renderer import Finished, Progress, Renderer, RenderSpec, Work, load_for, work_cost
from ..errors import UserError

if TYPE_CHECKING:
    import torch

    from ..options import Options

RETRIES = 3  # times a section is resubmitted after its worker died, before the job fails
WAIT_SECONDS = 1.0  # longest single wait for a worker's next event
CONNECT_SECONDS = 10  # bound on reaching a cluster's address
PLACE_SECONDS = 120.0  # with no worker alive, how long a new one may take to start
PLACE_ENV = "MUSIC2VIDEO_PLACE_SECONDS"  # overrides PLACE_SECONDS (tests, slow autoscalers)
HEAD_SECONDS = 10.0  # a cluster head (its GCS) that does not answer this long is lost
NODES_SECONDS = 2.0  # how often the cluster's live nodes are looked at
BACKPRESSURE = 64  # events a worker may run ahead of the driver before it waits
START_FAILURES = 3  # new workers in a row that die before they answer: the cluster cannot run them


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
            spec.augments)


def reachable(address: str, seconds: float = CONNECT_SECONDS) -> None:
    """Fails fast (ConnectionError) when a host:port cluster address does not answer: ray.init
    would retry it for minutes. Other forms ('auto', ray://...) are left to Ray."""
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


def runtime_env() -> dict:
    """What every Ray worker gets: this package, sleeping OpenMP threads, and this process's
    MUSIC2VIDEO_* settings (the cache and checkpoints folders made absolute)."""
    package = str(Path(__file__).resolve().parents[1])  # the package root, music2video/
    ours = {k: v for k, v in os.environ.items() if k.startswith("MUSIC2VIDEO_")}
    for key in ("MUSIC2VIDEO_CACHE", "MUSIC2VIDEO_CHECKPOINTS"):
        if ours.get(key):
            ours[key] = os.path.abspath(ours[key])
    return {"py_modules": [package], "env_vars": {"OMP_WAIT_POLICY": "PASSIVE", **ours}}


def place_seconds() -> float:
    """PLACE_SECONDS, or $MUSIC2VIDEO_PLACE_SECONDS when it holds a positive number."""
    try:
        value = float(os.environ.get(PLACE_ENV, ""))
    except ValueError:
        return PLACE_SECONDS
    return value if math.isfinite(value) and value > 0 else PLACE_SECONDS


class Worker:
    """Renders pieces of work one after the other, keeping the loaded networks (and the last
    job's renderer) while the next piece can share them: in this process, or as a Ray actor.

    `device` ('cuda', 'cpu') is the device this worker was given, overriding the spec's; None
    renders on the spec's."""

    def __init__(self, device: str | None = None):
        self.device = device
        self.models: dict = {}
        self.renderer: tuple | None = None  # (job, Renderer) of the last piece

    def describe(self, device: str | None = None) -> dict:
        """Where this worker runs: its host, Ray node (when on Ray), hardware (of `device`, else
        its own) and cores."""
        from ..engine.precision import hardware, machine_cores

        node = None
        if "ray" in sys.modules:
            import ray

            with contextlib.suppress(Exception):  # not an actor: no node
                node = ray.get_runtime_context().get_node_id()
        return {"host": socket.gethostname(), "node_id": node, "pid": os.getpid(),
                "hardware": hardware(device or self.device or "cpu"), "cores": machine_cores()}

    def _spec(self, spec: RenderSpec) -> RenderSpec:
        """The spec as this worker renders it: on its own device, when it was given one."""
        return spec if self.device is None else replace(spec, device=self.device)

    def _models(self, spec: RenderSpec):
        """The networks a spec needs, loaded once and kept while specs share them."""
        key = _models_key(spec)
        if key not in self.models:
            self.models, self.renderer = {}, None  # free the old networks before loading
            self.models = {key: load_for(spec)}
        return self.models[key]

    def render(self, spec: RenderSpec, samples, work: Work) -> Iterator:
        """Yields the events of one piece of work."""
        spec = self._spec(spec)
        models = self._models(spec)
        if self.renderer is None or self.renderer[0] != (work.job, spec.device):
            self.renderer = ((work.job, spec.device), Renderer(spec, samples, models))
        yield from self.renderer[1].render(work)

    def step_seconds(self, spec: RenderSpec, samples) -> float:
        """Seconds one of the spec's steps takes here (timed on a renderer of its own, so the
        render that follows draws the same random numbers as without it)."""
        spec = self._spec(spec)
        return Renderer(spec, samples, self._models(spec)).step_seconds()

    def close(self) -> None:
        """Frees the networks."""
        self.models, self.renderer = {}, None


class InProcess:
    """Renders every piece of work here, one after the other, in song order."""

    def __init__(self, device=None):
        self.worker = Worker()
        self.name = worker_name(self.worker.describe(str(device) if device else None), None)

    def placement(self, placement):
        """The placement, as this process renders it."""
        return placement

    def precision(self, device, size: tuple[int, int], cuts: int):
        """--precision auto on this process's device (a precision.Choice)."""
        return choose_precision(device, size, cuts)

    def step_seconds(self, spec: RenderSpec, samples) -> float:
        """Seconds a step of the spec takes on this process's worker."""
        return self.worker.step_seconds(spec, samples)

    def render(self, jobs: dict, works: list[Work]) -> Iterator:
        """Yields the events of every work; a job that fails yields Failed and is skipped."""
        failed = set()
        for work in sorted(works, key=lambda w: (w.job, w.first, not w.repair)):
            if work.job in failed:
                continue
            spec, samples = jobs[work.job]
            try:
                for event in self.worker.render(spec, samples, work):
                    if isinstance(event, Finished):
                        event.worker = self.name
                    yield event
            except UserError as err:
                failed.add(work.job)
                yield Failed(work.job, str(err))

    def close(self) -> None:
        """Frees the networks."""
        self.worker.close()


def worker_name(info: dict, node: str | None) -> dict:
    """A worker as the journal and the report name it: its node (name and the start of Ray's
    node id; else its host), its hardware and its process id."""
    where = f"{node} ({info['node_id'][:8]})" if node and info.get("node_id") else info["host"]
    return {"node": where, "hardware": info["hardware"], "pid": info["pid"]}


def said(name: dict | None) -> str:
    """A worker's name in a log line."""
    return f"the worker on {name['node']}, {name['hardware']}" if name else "a Ray worker"


@dataclass(frozen=True)
class Placement:
    """Where the work runs."""

    device: "torch.device | str"  # an in-process worker's device (its type for Ray workers)
    workers: int  # sections rendered at once (0 on a cluster: one per GPU, else per CPU)
    ray: str | None  # None: in this process; 'local', 'auto' or a cluster address
    gpus: tuple[int, ...]  # GPUs of a local Ray instance
    from_env: bool = False  # the cluster address came from $RAY_ADDRESS
    kind: str = "auto"  # a cluster's workers: 'auto' (GPUs when it has any), 'gpu' or 'cpu'


def cluster_address(opts) -> tuple[str | None, bool]:
    """--ray, else $RAY_ADDRESS (Ray's own convention, set by `ray job submit`), and whether it
    came from the environment; --ray local renders on this machine whatever is set."""
    if opts.ray:
        return opts.ray, False
    address = os.environ.get("RAY_ADDRESS", "").strip()
    return (address, True) if address else (None, False)


def place(opts: "Options") -> Placement:
    """Chooses the device and the workers from -cd, -gid, --workers, --ray and $RAY_ADDRESS.

    A cluster's device is not known here (device None): the cluster says what it has."""
    import torch

    from ..models.networks import pick_device

    address, from_env = cluster_address(opts)
    if address not in (None, "local"):
        return Placement(None, opts.workers or 0, address, (), from_env, opts.ray_device)
    gpus = opts.gpu_id
    if opts.cuda_device or len(gpus) == 1 or not torch.cuda.is_available():
        device = pick_device(opts.cuda_device, gpus[0])
        if len(gpus) > 1:
            warnings.warn(f"-gid {','.join(map(str, gpus))}: no GPU found; the workers share "
                          "the CPU")
        workers = opts.workers or 1
        if device.type == "cuda" and workers > 1:
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
        if workers > len(gpus):
            raise SchedulerError(f"--workers {workers} with {len(gpus)} GPUs: one worker per GPU")
    if device.type == "mps" and workers > 1:
        raise SchedulerError("several workers need CUDA GPUs or the CPU, not Apple MPS; use --workers 1")
    ray = address or ("local" if workers > 1 else None)
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
        return InProcess(placement.device)
    device_type = placement.device.type if placement.device is not None else None
    return RayScheduler(placement.ray, placement.workers, list(placement.gpus), device_type,
                        kind=placement.kind, from_env=placement.from_env)


@dataclass
class _Actor:
    """A Ray worker: asked for, then (once it answers where it runs) ready for work."""

    handle: object
    kind: str  # 'GPU' or 'CPU': what it was given
    asked: float  # time.monotonic() when it was asked for
    ready: object = None  # its describe() call until that answers
    name: dict | None = None  # its node and hardware (worker_name), once known


@dataclass
class _Flight:
    """A piece of work, the actor rendering it, and what has come back of it."""

    work: Work
    retries: int = 0
    actor: _Actor | None = None  # None until submitted
    state: tuple[int, dict] | None = None  # (segment, state) of the last state received
    received: set = field(default_factory=set)  # wanted segments received
    progress: int = 0  # steps reported since that state (or since the start)
    setup: tuple[int, str] | None = None  # (threads, precision) the section renders with


def _reason(err: BaseException) -> str:
    """An exception's first line, short, for a one-line message."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _task_line(err, actor: _Actor) -> str:
    """A worker call that raised (a RayTaskError) as one line: where, then its last line (a
    UserError's own message)."""
    cause = err.cause if isinstance(err.cause, UserError) else err
    where = f"on {actor.name['node']}: " if actor.name else ""
    return f"{where}{str(cause).strip().splitlines()[-1]}"


class RayScheduler:
    """Renders work on Ray actors, one section at a time each, streaming its segments back.

    Each actor is a Worker: it keeps its networks loaded from one section to the next, so a
    song of many sections loads the models once per worker, not once per section. address
    None/'local' starts a Ray instance here with `workers` actors (one GPU each when `gpus` lists
    them, else one CPU each); an address (or 'auto') joins a cluster and keeps `workers` actors
    there, or one per GPU (else per CPU) of its live nodes, looked at again as nodes come and go.

    Lost capacity never hangs a run: work waits in a queue and goes to whichever worker is free
    (never bound to a worker that has yet to start), a dead worker's section goes back to the
    front of the queue from the last state received, and when no worker is alive and none can
    start within PLACE_SECONDS, or the cluster's head stops answering, render() raises one
    SchedulerError line (the run folder is resumable). `worker` is the actor's class (tests and
    the benchmark use stand-ins)."""

    def __init__(self, address: str | None, workers: int, gpus: list[int] | None = None,
                 device_type: str | None = "cpu", worker=Worker, kind: str = "auto",
                 from_env: bool = False):
        try:
            import ray
        except ImportError:
            raise SchedulerError("Ray is not installed; pip install -r requirements.txt") from None
        self.ray = ray
        self.local = address in (None, "local")
        self._connect(address, workers, gpus, from_env)
        # Ray prints the cluster's error messages (a raylet's death, with 20 lines of its log)
        # to this terminal even with log_to_driver=False; the run says what it does about a
        # lost worker in one line of its own. The same switch Ray's debugger uses.
        if hasattr(ray._private.worker, "_worker_logs_enabled"):
            ray._private.worker._worker_logs_enabled = False
        self.gcs = ray.get_runtime_context().gcs_address
        self.requested = workers
        self.kind = ("GPU" if device_type == "cuda" else "CPU") if self.local else kind.upper()
        self.worker = ray.remote(worker)
        self.actors: list[_Actor] = []  # asked for and not known to be dead
        self.capacity = {"GPU": 0, "CPU": 0, "nodes": 0}
        self.names: dict[str, str] = {}  # node id: node name
        self.looked = -math.inf
        self.head_checked, self.head_lost = -math.inf, None
        self.failures = 0  # workers in a row that died before answering
        self.warned: set[str] = set()
        self._look()

    def _connect(self, address: str | None, workers: int, gpus: list[int] | None,
                 from_env: bool) -> None:
        """ray.init: a local instance, or the cluster at `address`; one line when it fails."""
        ray = self.ray
        terminate = signal.getsignal(signal.SIGTERM)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        try:
            if self.local:
                if gpus:  # the local instance sees these GPUs only
                    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
                ray.init(address="local", num_cpus=max(workers, 1), num_gpus=len(gpus or ()),
                         include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                         runtime_env=runtime_env())
            else:
                reachable(address)
                ray.init(address=address, log_to_driver=False, logging_level="ERROR",
                         runtime_env=runtime_env())
        except Exception as err:  # ConnectionError, RuntimeError, ValueError ... from ray.init
            where = "start Ray here" if self.local else f"join the Ray cluster at {address}"
            fix = ("unset RAY_ADDRESS, or give --ray local to render on this machine"
                   if from_env else "or run with --workers 1 to render in this process")
            source = " (from $RAY_ADDRESS)" if from_env else ""
            raise SchedulerError(f"could not {where}{source} ({_reason(err)}); check `ray "
                                 f"status`, {fix}") from None
        finally:
            restore(terminate, visible)

    def placement(self, placement):
        """The placement with a cluster's device filled in (what it offers now)."""
        import torch

        if placement.device is not None:
            return placement
        return replace(placement, device=torch.device("cuda" if self._kind() == "GPU"
                                                      else "cpu"))

    def precision(self, device, size: tuple[int, int], cuts: int):
        """--precision auto: decided here for a local instance (a precision.Choice); None on a
        cluster, where each worker decides on its own hardware as it renders."""
        return choose_precision(device, size, cuts) if self.local else None

    # ---- the cluster ----------------------------------------------------------------------

    def _look(self) -> None:
        """Counts the GPUs and CPUs of the cluster's live nodes (every NODES_SECONDS)."""
        now = time.monotonic()
        if now - self.looked < NODES_SECONDS:
            return
        self._check_head(force=True)  # asking a head that is gone would hang
        if self.head_lost is not None:
            return
        self.looked = now
        alive = [n for n in self.ray.nodes() if n.get("Alive")]
        self.capacity = {kind: int(sum(n.get("Resources", {}).get(kind, 0) for n in alive))
                         for kind in ("GPU", "CPU")}
        self.capacity["nodes"] = len(alive)
        self.names.update({n["NodeID"]: n.get("NodeName") or n.get("NodeManagerAddress", "")
                           for n in alive})

    def _kind(self) -> str:
        """What new workers are given: GPUs while the cluster offers any (or when asked)."""
        if self.kind != "AUTO":
            return self.kind
        return "GPU" if self.capacity["GPU"] > 0 else "CPU"

    def _target(self, kind: str) -> int:
        """How many workers to keep: --workers, else one per GPU (CPU) of the live nodes."""
        slots = self.capacity[kind]
        if self.requested > slots and "size" not in self.warned:
            self.warned.add("size")
            warnings.warn(f"--workers {self.requested}: the Ray cluster has {slots} {kind}(s); "
                          f"{slots} workers render, more as nodes join")
        return max(1, self.requested or slots)

    def _check_head(self, force: bool = False) -> None:
        """Raises SchedulerError when the cluster's head (its GCS) has not answered for
        HEAD_SECONDS; looked at every second, or now (`force`, after a worker was lost)."""
        now = time.monotonic()
        if not force and now - self.head_checked < 1.0:
            return
        self.head_checked = now
        host, _, port = self.gcs.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                self.head_lost = None
                return
        except OSError:
            self.head_lost = self.head_lost or now
        if now - self.head_lost >= HEAD_SECONDS:
            what = ("the local Ray instance stopped" if self.local else
                    f"lost the Ray cluster's head: its GCS at {self.gcs} has not answered for "
                    f"{HEAD_SECONDS:g} s")
            raise SchedulerError(f"{what}; finished segments are kept: start the cluster again "
                                 "(`ray start --head`), then run the same command to resume")

    # ---- workers --------------------------------------------------------------------------

    def _grow(self, queued: int, idle: list) -> None:
        """Asks for workers while there is queued work no idle or starting worker will take,
        up to the target; retires idle or starting workers of a kind no longer wanted."""
        if self.head_lost is not None:
            return
        kind = self._kind()
        for actor in [a for a in self.actors if a.kind != kind and (a in idle or a.ready)]:
            if actor in idle:
                idle.remove(actor)
            self._drop(actor)
        starting = sum(1 for a in self.actors if a.ready is not None)
        while len(self.actors) < self._target(kind) and queued > len(idle) + starting:
            options = {"num_gpus": 1 if kind == "GPU" else 0, "num_cpus": 1, "max_restarts": 0}
            handle = self.worker.options(**options).remote("cuda" if kind == "GPU" else "cpu")
            self.actors.append(_Actor(handle, kind, time.monotonic(), handle.describe.remote()))
            starting += 1

    def _started(self, actor: _Actor, idle: list) -> None:
        """A new worker answered (it is idle now), or died before it could."""
        try:
            info = self.ray.get(actor.ready)
        except self.ray.exceptions.RayError as err:
            self._drop(actor)
            self.failures += 1
            if self.failures >= START_FAILURES:
                raise SchedulerError(f"{START_FAILURES} Ray workers in a row stopped before they "
                                     f"started ({_reason(err)}); check `ray status` and the "
                                     "workers' logs (`ray logs`)") from None
            return
        self.failures, actor.ready = 0, None
        actor.name = worker_name(info, self.names.get(info.get("node_id") or ""))
        idle.append(actor)

    def _stranded(self, queued: int, busy: int, idle: list) -> None:
        """Raises SchedulerError when work waits, no worker is alive, and none has started
        within place_seconds() of being asked for."""
        if not queued or busy or idle or self.head_lost is not None:
            return
        asked = [a.asked for a in self.actors if a.ready is not None]
        waited = time.monotonic() - min(asked) if asked else math.inf
        if waited < place_seconds():
            return
        c = self.capacity
        raise SchedulerError(f"no Ray worker is left, and none could start within "
                             f"{place_seconds():g} s (the cluster has {c['GPU']} GPU(s) and "
                             f"{c['CPU']} CPU(s) on {c['nodes']} live node(s)); finished "
                             "segments are kept: add nodes (`ray start --address ...`) or free "
                             "them (`ray status`), then run the same command to resume")

    def _drop(self, actor: _Actor) -> None:
        """Stops an actor (dead, or rendering work nobody wants any more); with the head gone,
        it is only forgotten (ray.shutdown ends it)."""
        if actor in self.actors:
            self.actors.remove(actor)
        if self.head_lost is None:
            with contextlib.suppress(Exception):  # already gone with its node
                self.ray.kill(actor.handle)

    def step_seconds(self, spec: RenderSpec, samples) -> float | None:
        """Seconds a step of the spec takes on a worker (which keeps the networks it loaded for
        the render that follows); None when the worker died meanwhile. A worker that cannot
        start within place_seconds(), or the head's loss, is one SchedulerError line."""
        ray, idle = self.ray, [a for a in self.actors if a.ready is None]
        while not idle:
            self._check_head()
            self._look()
            self._grow(1, idle)
            self._stranded(1, 0, idle)
            starting = {a.ready: a for a in self.actors if a.ready is not None}
            ready, _ = ray.wait(list(starting), num_returns=1, timeout=WAIT_SECONDS)
            for ref in ready:
                self._started(starting[ref], idle)
        actor = idle[0]
        timed = actor.handle.step_seconds.remote(spec, samples)
        while not ray.wait([timed], timeout=WAIT_SECONDS)[0]:
            self._check_head()
        try:
            return ray.get(timed)
        except ray.exceptions.RayTaskError as err:  # its weights, its memory: one line
            raise SchedulerError(_task_line(err, actor)) from None
        except ray.exceptions.RayError:  # it died: the render finds another
            self._drop(actor)
            return None

    def _submit(self, refs: dict, flight: _Flight, actor: _Actor):
        """Starts a piece of work on an idle actor; returns its generator."""
        flight.actor = actor
        spec_ref, samples_ref = refs[flight.work.job]
        method = actor.handle.render.options(num_returns="streaming",
                                             _generator_backpressure_num_objects=BACKPRESSURE)
        return method.remote(spec_ref, samples_ref, flight.work)

    # ---- the run --------------------------------------------------------------------------

    def render(self, jobs: dict, works: list[Work]) -> Iterator:
        """Yields events as they arrive; a section whose worker died goes on from the last state
        received, on the next free worker (a lost worker costs at most STATE_SECONDS of its
        rendering). Raises SchedulerError when no worker is left or the head is lost."""
        ray = self.ray
        refs = {job: (ray.put(spec), ray.put(samples)) for job, (spec, samples) in jobs.items()}
        queue = [_Flight(w) for w in sorted(works, key=lambda w: -work_cost(jobs[w.job][0], w))]
        idle = [a for a in self.actors if a.ready is None]
        flights: dict = {}
        failed: set[int] = set()
        while queue or flights:
            self._check_head()
            self._look()
            queue[:] = [f for f in queue if f.work.job not in failed]
            while queue and idle:
                flight = queue.pop(0)  # longest first; a dead worker's rest goes first
                flights[self._submit(refs, flight, idle.pop())] = flight
            self._grow(len(queue), idle)
            self._stranded(len(queue), len(flights), idle)
            starting = {a.ready: a for a in self.actors if a.ready is not None}
            waits = list(flights) + list(starting)
            if not waits:
                time.sleep(WAIT_SECONDS)
                continue
            ready, _ = ray.wait(waits, num_returns=1, timeout=WAIT_SECONDS)
            for ref in ready:
                if ref in starting:
                    self._started(starting[ref], idle)
                else:
                    yield from self._receive(ref, flights, queue, idle, failed)

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
            yield from self._fail(flight.work.job, _task_line(err, flight.actor), flights, failed)
            return
        except ray.exceptions.RayError as err:  # the worker, or its node, is gone
            del flights[gen]
            self._check_head(force=True)
            yield from self._lost(flight, err, queue, flights, failed)
            return
        if isinstance(event, Finished):
            event.worker = flight.actor.name
            flight.setup = (event.threads, event.precision)
            if event.wanted:
                flight.received.add(event.index)
            if event.state is not None:
                flight.state, flight.progress = (event.index, event.state), 0
        elif isinstance(event, Progress):
            flight.progress += event.steps
        yield event

    def _lost(self, flight: _Flight, err: BaseException, queue: list, flights: dict,
              failed: set) -> Iterator:
        """A worker died (or its node did): its section goes back to the front of the queue from
        the last state received, and the steps since are taken off the bar."""
        self._drop(flight.actor)
        work = flight.work
        if flight.retries >= RETRIES:
            yield from self._fail(work.job, f"a worker died {RETRIES + 1} times rendering section "
                                  f"{work.section + 1} ({type(err).__name__}); check the "
                                  "workers' logs (`ray logs`), then run the same command to "
                                  "resume", flights, failed)
            return
        rest = self._remaining(flight)
        if flight.progress:
            yield Progress(work.job, -flight.progress)  # those steps are rendered again
        if rest is None:
            return
        if self.head_lost is None:  # else the head's loss is the news, said once
            warnings.warn(f"lost {said(flight.actor.name)} ({type(err).__name__}); section "
                          f"{work.section + 1} goes on from segment {rest.first + 1} on the "
                          "next free worker")
        queue.insert(0, _Flight(rest, retries=flight.retries + 1))

    @staticmethod
    def _remaining(flight: _Flight) -> Work | None:
        """The rest of a piece of work after the last state received, writing only what has not
        come back (None: everything came back), with the threads and precision it began with."""
        work = flight.work
        write = work.write - flight.received
        if not write:
            return None
        first, state = (flight.state[0] + 1, flight.state[1]) if flight.state else (
            work.first, work.state)
        threads, precision = flight.setup or (work.threads, work.precision)
        return replace(work, first=first, state=state, write=frozenset(write), threads=threads,
                       precision=precision)

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
