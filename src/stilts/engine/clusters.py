"""Where the cells run: a Dask cluster of one of three kinds, opened for the length of a study.

  local            a cluster on this machine, on 127.0.0.1 only: `--jobs N` CPU workers (one cell each),
                   or one worker per GPU of `--devices` (CUDA_VISIBLE_DEVICES pinned, k cells each)
  tcp://HOST:PORT  a running scheduler, with workers you started (`dask worker ... --resources GPU=K`)
  slurm            dask-jobqueue's SLURMCluster: `--jobs N` batch jobs of one GPU and one worker each;
                   queue, account, cores, memory and walltime come from dask's `jobqueue.slurm` config

A GPU worker has the resource `GPU=K`: the K cells its GPU holds at once; a training cell asks for `GPU=1`.
Nothing here picks a network address: the local cluster binds 127.0.0.1, and SLURM's scheduler binds
where `jobqueue.slurm.interface` or `jobqueue.slurm.scheduler-options.host` says, or refuses to start.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field

from stilts.errors import StiltsError

LOOPBACK = "127.0.0.1"


@dataclass
class Options:
    jobs: int = 1  # local: CPU workers; slurm: batch jobs
    devices: list[str] = field(default_factory=list)  # local: one worker per GPU id
    cells_per_gpu: int = 1
    dashboard: str | None = None  # address for the dashboard (needs bokeh); None: off


def cpus() -> int:
    """The CPUs this process may run on (a SLURM job's share, not the whole node)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cell_threads(cores: int, cells: int) -> str:
    """CPU threads per cell (`STILTS_CELL_THREADS`, which `cell.CellWorker` applies): the cores shared out."""
    return str(max(1, cores // cells))


def _dashboard(address: str | None) -> dict:
    if address is None:  # the scheduler always serves a few HTTP routes: keep them on loopback too
        return {"dashboard": False, "dashboard_address": f"{LOOPBACK}:0"}
    return {"dashboard": True, "dashboard_address": address}


def local_workers(opts: Options) -> dict:
    """The local cluster's workers: one per GPU (`opts.devices`, k cells each) or `opts.jobs` one-cell CPU
    workers, on 127.0.0.1, the machine's cores shared out among the cells."""
    from distributed import Nanny

    threads = cell_threads(cpus(), len(opts.devices) * opts.cells_per_gpu if opts.devices else opts.jobs)
    common = {"host": LOOPBACK, "dashboard_address": f"{LOOPBACK}:0", "silence_logs": logging.ERROR}
    if opts.devices:
        workers = {f"gpu{d}": {"cls": Nanny, "options": common | {
            "nthreads": opts.cells_per_gpu, "resources": {"GPU": opts.cells_per_gpu},
            "env": {"CUDA_VISIBLE_DEVICES": d, "STILTS_CELL_THREADS": threads}}} for d in opts.devices}
    else:
        workers = {f"cpu{i}": {"cls": Nanny, "options": common | {
            "nthreads": 1, "env": {"STILTS_CELL_THREADS": threads}}} for i in range(opts.jobs)}
    return workers


def local(opts: Options):
    from distributed import Scheduler, SpecCluster

    workers = local_workers(opts)
    scheduler = {"cls": Scheduler, "options": {"host": LOOPBACK, "port": 0, **_dashboard(opts.dashboard)}}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.ERROR, name="stilts-local")


def slurm(opts: Options):
    """A SLURMCluster whose every job is one worker with one GPU (`GPU=k`: k cells at once)."""
    import dask
    from dask_jobqueue import SLURMCluster

    cfg = dask.config.get("jobqueue.slurm")
    sched = dict(cfg.get("scheduler-options") or {})
    if not (cfg.get("interface") or sched.get("host") or sched.get("interface")):
        raise StiltsError("--cluster slurm: set where the scheduler listens (an address the compute nodes reach): "
                          "jobqueue.slurm.interface or jobqueue.slurm.scheduler-options.host in "
                          "~/.config/dask/jobqueue.yaml")
    cores = cfg.get("job-cpu") or cfg.get("cores")
    if not cores or not cfg.get("memory"):
        raise StiltsError("--cluster slurm: set jobqueue.slurm.cores and jobqueue.slurm.memory (per job, one GPU) "
                          "in ~/.config/dask/jobqueue.yaml")
    k = opts.cells_per_gpu
    directives = list(cfg.get("job-extra-directives") or [])
    if not any("gres" in d or "gpus" in d for d in directives):
        directives.append("--gres=gpu:1")
    sched |= _dashboard(opts.dashboard)
    return SLURMCluster(
        cores=k, processes=1, job_cpu=int(cores),  # k Dask threads = k cells; the job's cores are theirs
        worker_extra_args=list(cfg.get("worker-extra-args") or []) + ["--resources", f"GPU={k}"] +
        ["--preload-nanny", "stilts.engine.slurm_signals", "--preload", "stilts.engine.slurm_signals"],  # SIGUSR1
        job_extra_directives=directives,
        job_script_prologue=list(cfg.get("job-script-prologue") or []) +
        [f"export STILTS_CELL_THREADS={cell_threads(int(cores), k)}"],
        scheduler_options=sched)


def keep_requeued_jobs():
    """Dask's cluster cancels a job whose worker stays gone `distributed.deploy.lost-worker-timeout` (15 s);
    a job that requeued itself (`--requeue`, SIGUSR1) waits in SLURM's queue and starts again: keep it."""
    import dask

    directives = dask.config.get("jobqueue.slurm.job-extra-directives", None) or []
    if any(d.split("=")[0].strip() == "--requeue" for d in directives):
        return dask.config.set({"distributed.deploy.lost-worker-timeout": "3650 days"})
    return contextlib.nullcontext()


@dataclass
class Opened:
    address: str
    gpus: bool  # whether training cells ask for a GPU
    dashboard: str | None
    describe: str


def is_remote(kind: str) -> bool:
    return kind.startswith(("tcp://", "tls://"))


def check(kind: str, opts: Options) -> None:
    """The command line's cluster options, before anything starts."""
    if not (kind in ("local", "slurm") or is_remote(kind)):
        raise StiltsError(f"--cluster: '{kind}' is not local, slurm or tcp://HOST:PORT")
    if is_remote(kind) and (opts.jobs != 1 or opts.devices or opts.cells_per_gpu != 1):
        raise StiltsError(f"--cluster {kind}: --jobs, --devices and --cells-per-gpu are for local and slurm "
                          f"clusters; this scheduler's workers are the ones you started (K cells on a GPU: "
                          f"dask worker ... --nthreads K --resources GPU=K)")
    if is_remote(kind) and opts.dashboard:
        raise StiltsError(f"--cluster {kind}: the dashboard is that scheduler's own (dask scheduler "
                          f"--dashboard-address 127.0.0.1:8787)")
    if opts.dashboard:
        try:
            import bokeh  # noqa: F401
        except ImportError:
            raise StiltsError("--dashboard needs bokeh: pip install 'bokeh>=3.1'") from None
    if opts.devices and opts.jobs != 1:
        raise StiltsError("--cluster local: --devices gives one worker per GPU; --jobs counts CPU workers: use one")
    if opts.devices and kind != "local":
        raise StiltsError(f"--cluster {kind}: --devices is for --cluster local")
    if kind == "local" and opts.cells_per_gpu > 1 and not opts.devices:
        raise StiltsError("--cluster local: --cells-per-gpu shares GPUs; name them with --devices (e.g. 0,1)")


@contextlib.contextmanager
def open_cluster(kind: str, opts: Options):
    """Yield the scheduler address for the study's Client; close what was started here afterwards."""
    if is_remote(kind):
        yield Opened(kind, gpus=False, dashboard=None, describe=f"scheduler {kind}")
        return
    if kind == "local":
        cluster = local(opts)
        describe = (f"local cluster: {len(opts.devices)} GPU workers × {opts.cells_per_gpu} cells" if opts.devices
                    else f"local cluster: {opts.jobs} workers × 1 cell")
        gpus = bool(opts.devices)
    else:
        cluster = slurm(opts)
        cluster.scale(jobs=opts.jobs)
        describe, gpus = f"SLURM: {opts.jobs} jobs × 1 GPU × {opts.cells_per_gpu} cells", True
    try:
        with keep_requeued_jobs() if kind == "slurm" else contextlib.nullcontext():
            yield Opened(cluster.scheduler_address, gpus, cluster.dashboard_link if opts.dashboard else None,
                         describe)
    finally:
        cluster.close()
