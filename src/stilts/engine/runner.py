"""`stilts study --cluster ...`: the out-of-date stages as Dask tasks, then one `dvc commit` of what ran.

Each stage is one task, submitted as soon as its upstream stages have finished, with their results
(dvc.lock entries) as arguments; a training stage asks for a share of a GPU (`GPU=1/k`) where the
workers have GPUs. The head, not Dask's task graph, holds finished results: Dask recomputes a finished
task whose result was on a worker that died, which would train (and log) that cell a second time.

A stage that fails stops new starts (nothing more is submitted, and queued tasks check an Event before
they begin), lets the running ones finish and records them; the study exits with the failed cell's
exit code and one-line error. A worker lost mid-cell is Dask's to handle: the task runs again elsewhere
(up to `distributed.scheduler.allowed-failures` lost workers), resuming from the cell's saved state
where the filesystem is shared. A second `stilts study` runs only what is left.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

from stilts.engine import clusters, stages, transport
from stilts.engine.cell import CellWorker, StageFailed, run_stage
from stilts.engine.progress import Progress
from stilts.errors import StiltsError
from stilts.io import atomic_write_text

WORKER_WAIT_S = 120  # how long a tcp:// scheduler may go without workers before the study gives up
POLL_S = 0.1  # how often the head collects finished stages


def _check_tracking(uri: str | None, shared: bool, kind: str) -> None:
    if uri and uri.startswith(("http://", "https://")):
        import urllib.request

        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10).read()
        except OSError as e:
            raise StiltsError(f"--tracking-uri {uri}: no MLflow server answers ({e}); start one with `stilts server`")
    if kind == "local" and not shared:
        raise StiltsError("--cluster local: its workers share this machine's filesystem; "
                          "set cluster.shared_filesystem: true")
    if not uri and kind != "local":
        raise StiltsError(f"--cluster {kind}: cells on several machines log to one MLflow server; pass "
                          f"--tracking-uri http://HOST:PORT (see `stilts server`)")


def _failure(stage: str, exc: BaseException) -> StageFailed:
    if isinstance(exc, StageFailed):
        return exc
    from distributed.scheduler import KilledWorker

    if isinstance(exc, KilledWorker):
        return StageFailed(stage, 1, "its worker died at every attempt (distributed.scheduler.allowed-failures)")
    return StageFailed(stage, 1, f"{type(exc).__name__}: {exc}")


def _write_log(params, result: dict | StageFailed) -> None:
    """Bring a cell's log from a worker's own copy into the project's .stilts/logs."""
    stage, log = (result.stage, result.log) if isinstance(result, StageFailed) else (result["stage"], result["log"])
    if log:
        atomic_write_text(Path(params.root) / ".stilts" / "logs" / f"{stage}.log", log)


class _Head:
    """Submits stages as their inputs are ready, collects results, stops on the first failure."""

    def __init__(self, params, client, plan, base: dict, gpus: bool, cells_per_gpu: int, tracking_uri, progress):
        from distributed import Event, as_completed

        self.params, self.client, self.base, self.progress = params, client, base, progress
        self.plan = {st.name: st for st in plan}
        self.after = {st.name: [d.name for d in plan if st.name in d.upstream] for st in plan}
        self.token = uuid.uuid4().hex[:8]
        self.stop = Event(f"stilts-stop-{self.token}", client=client)
        self.topic = f"stilts-{self.token}"
        client.subscribe_topic(self.topic, progress.event)
        self.share = clusters.gpu_share(cells_per_gpu) if gpus else None
        self.tracking_uri = tracking_uri
        self.results: dict[str, dict] = {}
        self.failures: list[StageFailed] = []
        self.submitted: set[str] = set()
        self.futures: dict[str, object] = {}  # submitted and not finished, by key
        self.pending = as_completed()

    def _submit(self, st) -> None:
        recorded = self.base.get("recorded", {})
        spec = {"name": st.name, "file": st.file, "address": st.address, "cmd": st.cmd, "uncached": st.uncached,
                "stop": self.stop.name, "topic": self.topic, "tracking_uri": self.tracking_uri, **self.base,
                "recorded": {i: recorded[i] for i in st.inputs if i in recorded}}
        inputs = [{k: self.results[u][k] for k in ("stage", "file", "entry") if k in self.results[u]}
                  for u in st.upstream]  # not their logs: the analysis alone has every cell upstream
        fut = self.client.submit(run_stage, spec, *inputs, pure=False,
                                 key=f"{st.name}-{self.token}", priority=st.downstream,
                                 resources={"GPU": self.share} if st.trains and self.share else None)
        self.submitted.add(st.name)
        self.futures[fut.key] = fut
        self.pending.add(fut)

    def _finished(self, name: str, fut) -> None:
        if fut.status == "finished":
            result = fut.result()
            if result.get("skipped") or result.get("cancelled"):
                self.progress.not_run(name)
                return
            self.results[name] = result
            _write_log(self.params, result)
            self.progress.finished(name, True, result["seconds"])
            if not self.failures:
                for nxt in self.after[name]:
                    if nxt not in self.submitted and all(u in self.results for u in self.plan[nxt].upstream):
                        self._submit(self.plan[nxt])
        elif fut.status == "cancelled":
            self.progress.not_run(name)
        else:
            failure = _failure(name, fut.exception())
            self.failures.append(failure)
            _write_log(self.params, failure)
            self.progress.finished(name, False)
            self.stop.set()

    def run(self) -> None:
        for st in self.plan.values():
            if not st.upstream:
                self._submit(st)
        try:
            while not self.pending.is_empty():
                for fut in self.pending.next_batch(block=False):
                    del self.futures[fut.key]
                    self._finished(fut.key[:-len(self.token) - 1], fut)
                    # the head holds the result now: release it at once, or Dask would run the cell again
                    # (and log a second run) if the worker holding it died while any reference remained
                    fut.release()
                    self.progress.show()
                time.sleep(POLL_S)
                self.progress.show()
        except KeyboardInterrupt:
            self.stop.set()
            self.client.cancel(list(self.futures.values()))  # the running cells are killed on their workers
            self.failures.append(StageFailed("(interrupted)", 130, "Ctrl-C; running cells were stopped"))
        for name in self.plan:
            if name not in self.submitted:
                self.progress.not_run(name)
        self.progress.show(final=True)


def run(params, kind: str, opts: clusters.Options, tracking_uri: str | None = None, out=None) -> int:
    from distributed import Client

    from stilts import pipeline

    clusters.check(kind, opts)
    head = transport.for_head(params)
    _check_tracking(tracking_uri, head.shared, kind)
    pipeline.write(params)
    plan = stages.plan(params)
    total = len(pipeline.stages(params))
    if not plan:
        print(f"0 of {total} stages to run: the study is up to date", flush=True)
        return 0
    base = head.prepare(plan)
    with clusters.open_cluster(kind, opts) as cluster:
        try:
            client = Client(cluster.address, timeout=30)
        except OSError as e:
            raise StiltsError(f"--cluster {kind}: cannot reach the scheduler ({e})") from None
        with client:
            if clusters.is_remote(kind):
                try:
                    client.wait_for_workers(1, timeout=WORKER_WAIT_S)
                except TimeoutError:
                    raise StiltsError(f"--cluster {kind}: no worker joined in {WORKER_WAIT_S} s") from None
                workers = client.scheduler_info(n_workers=-1)["workers"].values()
                cluster.gpus = any("GPU" in (w.get("resources") or {}) for w in workers)
            if opts.cells_per_gpu > 1 and not cluster.gpus:
                raise StiltsError("--cells-per-gpu: no worker has a GPU resource (start them with "
                                  "`dask worker ... --resources GPU=1`, or use --devices with --cluster local)")
            client.register_plugin(CellWorker())
            print(f"{len(plan)} of {total} stages to run on the {cluster.describe}"
                  + (f"; dashboard {cluster.dashboard}" if cluster.dashboard else ""), flush=True)
            study = _Head(params, client, plan, base, cluster.gpus, opts.cells_per_gpu, tracking_uri,
                          Progress(len(plan), out=out))
            study.run()
    head.record(list(study.results.values()), study.plan)
    print(f"{len(study.results)} stages ran and are recorded in dvc.lock", flush=True)
    if study.failures:
        first = study.failures[0]
        log = Path(params.root) / ".stilts" / "logs" / f"{first.stage}.log"
        print(f"stilts: error: {first} (log: {log})", file=sys.stderr, flush=True)
        return first.code or 1
    return 0
