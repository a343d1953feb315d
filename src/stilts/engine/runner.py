"""`stilts study --cluster ...`: the out-of-date stages as Dask tasks, then one `dvc commit` of what ran.

A stage is submitted when its upstream stages have finished, with their results (dvc.lock entries) as
arguments; a training stage asks for one of a GPU worker's `GPU=K` cell slots. The head holds finished
results and releases each future at once: Dask reruns a finished task whose result sat on a worker that
died, which would train (and log) that cell again. After a failed stage no new cell starts: those running
finish and are recorded. A worker lost mid-cell is Dask's to handle (the task runs again
elsewhere, up to `distributed.scheduler.allowed-failures` times); a cell stopped by a signal on its worker saved
its state, and the head submits it again. SIGTERM, SIGINT or SIGUSR1 to the head stops the running cells
(each saves its state and ends its run) and records what finished.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from pathlib import Path

from stilts import pipeline, stages, stop
from stilts.engine import cell, clusters, transport
from stilts.errors import StiltsError
from stilts.io import atomic_write_text

WORKER_WAIT_S = 120  # how long a tcp:// scheduler may go without workers before the study gives up


def _check_tracking(uri: str | None, shared: bool, kind: str) -> None:
    """Where the cells log (that the store answers is checked by `stilts` before any command runs)."""
    if kind == "local" and not shared:
        raise StiltsError("--cluster local: its workers share this machine's filesystem; "
                          "set cluster.shared_filesystem: true")
    if not uri and kind != "local":
        raise StiltsError(f"--cluster {kind}: cells on several machines log to one MLflow server; pass "
                          f"--tracking-uri http://HOST:PORT (see `stilts server`)")


def _failure(stage: str, exc: BaseException) -> cell.StageFailed:
    if isinstance(exc, cell.StageFailed):
        return exc
    from distributed.scheduler import KilledWorker

    if isinstance(exc, KilledWorker):
        return cell.StageFailed(stage, 1, "its worker died at every attempt (distributed.scheduler.allowed-failures)")
    return cell.StageFailed(stage, 1, f"{type(exc).__name__}: {exc}")


class Study:
    """Submits stages as their inputs are ready, collects results as they complete, stops on a failure."""

    def __init__(self, params, client, plan: list, base: dict, gpus: bool, tracking_uri: str | None, out=None):
        from distributed import as_completed
        from tqdm.auto import tqdm

        self.params, self.client, self.base, self.gpus, self.tracking_uri = params, client, base, gpus, tracking_uri
        self.plan = {st.name: st for st in plan}
        self.after = {st.name: [d.name for d in plan if st.name in d.upstream] for st in plan}
        self.id = f"stilts-{uuid.uuid4().hex[:8]}"
        self.results: dict[str, dict] = {}
        self.failures: list[cell.StageFailed] = []
        self.waiting: dict[str, object] = {}  # submitted, not completed: future by stage
        self.cancelled = 0
        self.attempts: dict[str, int] = {}  # stage → times submitted
        self.names: dict[str, str] = {}  # task key → stage
        self.completed = as_completed()
        self.bar = tqdm(total=len(plan), desc="stages", unit="stage", file=out or sys.stderr, mininterval=1,
                        dynamic_ncols=True)

    def _submit(self, st) -> None:
        recorded = self.base.get("recorded", {})
        spec = {"name": st.name, "file": st.file, "address": st.address, "cmd": st.cmd, "uncached": st.uncached,
                "study": self.id, "tracking_uri": self.tracking_uri, **self.base,
                "recorded": {i: recorded[i] for i in st.inputs if i in recorded}}
        inputs = [{k: self.results[u][k] for k in ("stage", "file", "entry") if k in self.results[u]}
                  for u in st.upstream]  # not their logs: the analysis alone has every cell upstream
        attempt = self.attempts[st.name] = self.attempts.get(st.name, 0) + 1
        key = f"{st.name}-{self.id}" + (f"-{attempt}" if attempt > 1 else "")
        self.names[key] = st.name
        self.waiting[st.name] = self.client.submit(
            cell.run_stage, spec, *inputs, pure=False, key=key, priority=st.downstream,
            resources={"GPU": 1} if st.trains and self.gpus else None)
        self.completed.add(self.waiting[st.name])

    def _again(self, name: str, exc) -> bool:
        """A cell stopped by a signal on its worker (SLURM's preemption or walltime, a spot node's notice) saved
        its state: run it again, where it resumes, as Dask reruns the cells of a lost worker (at most
        `distributed.scheduler.allowed-failures` times each)."""
        import dask

        if not (isinstance(exc, cell.StageFailed) and exc.code == stop.EXIT_RESUME) or self.failures:
            return False
        if self.attempts[name] > dask.config.get("distributed.scheduler.allowed-failures"):
            return False
        self._submit(self.plan[name])
        return True

    def _write_log(self, stage: str, log: str) -> None:
        """Bring a cell's log from a worker's own copy into the project's .stilts/logs."""
        if log:
            atomic_write_text(Path(self.params.root) / ".stilts" / "logs" / f"{stage}.log", log)

    def _stop_new_starts(self) -> None:
        """Every worker starts no new cell of this study (`cell.close`); then the stages the scheduler has not
        handed to a worker are cancelled. A worker starts its next task the moment it reports a failure, before
        the head hears of it; a task cancelled while running would run on unrecorded, and one cancelled after it
        finished would lose the result of a cell that ran: the scheduler's own task states decide, in one step."""
        with contextlib.suppress(Exception):  # a worker that is gone starts nothing
            self.client.run(cell.close, self.id)

        def unhanded(dask_scheduler, keys):  # runs on the scheduler (pickled by value: it needs no stilts there)
            return [k for k in keys if k in dask_scheduler.tasks
                    and dask_scheduler.tasks[k].state in ("released", "waiting", "queued", "no-worker")]

        futures = {f.key: f for f in self.waiting.values()}
        self.client.cancel([futures[k] for k in self.client.run_on_scheduler(unhanded, keys=list(futures))])

    def _completed(self, name: str, fut) -> None:
        result = fut.result() if fut.status == "finished" else None  # gathered from its worker: once
        if fut.status == "cancelled" or (result is not None and result.get("started") is False):
            self.cancelled += 1
        elif result is not None:
            self.results[name] = result
            self._write_log(name, result["log"])
            for nxt in self.after[name] if not self.failures else ():
                if all(u in self.results for u in self.plan[nxt].upstream):
                    self._submit(self.plan[nxt])
        elif self._again(name, fut.exception()):
            return
        else:
            self.failures.append(_failure(name, fut.exception()))
            self._write_log(name, self.failures[-1].log)
            self._stop_new_starts()
        self.bar.update(1)
        self.bar.set_postfix_str(f"{len(self.failures)} failed, {self.cancelled} cancelled" if self.failures else "")

    def run(self) -> None:
        for st in self.plan.values():
            if not st.upstream:
                self._submit(st)
        try:
            for fut in self.completed:
                name = self.names.pop(fut.key)
                del self.waiting[name]
                self._completed(name, fut)
                # the head holds the result now: release it at once, or Dask would run the cell again
                # (and log a second run) if the worker holding it died while any reference remained
                fut.release()
        except KeyboardInterrupt as e:  # stilts.stop.Interrupted: SIGTERM, SIGINT or SIGUSR1 to the head
            self.client.cancel(list(self.waiting.values()))
            with contextlib.suppress(Exception):  # workers that got the signal too may be gone already
                self.client.run(cell.stop, self.id)  # the running cells save, end their runs and exit
            self.failures.append(cell.StageFailed("(interrupted)", stop.EXIT_RESUME, f"{str(e) or 'Ctrl-C'}; running "
                                                  "cells saved their state: `stilts study` again continues them"))
        self.bar.close()


def _connect(cluster, kind: str):
    from distributed import Client

    try:
        client = Client(cluster.address, timeout=30)
    except OSError as e:
        raise StiltsError(f"--cluster {kind}: cannot reach the scheduler ({e})") from None
    if clusters.is_remote(kind):
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except TimeoutError:
            client.close()
            raise StiltsError(f"--cluster {kind}: no worker joined in {WORKER_WAIT_S} s") from None
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        cluster.gpus = any("GPU" in (w.get("resources") or {}) for w in workers)
    client.register_plugin(cell.CellWorker())
    return client


def run(params, kind: str, opts: clusters.Options, tracking_uri: str | None = None, out=None,
        targets: list[str] | None = None) -> int:
    """Run the out-of-date stages (with `targets`: only those stages and what they need) on the cluster."""
    clusters.check(kind, opts)
    home = transport.for_head(params)
    _check_tracking(tracking_uri, home.shared, kind)
    pipeline.write(params)
    # the settings first, here: only the stages whose task's settings files changed are out of date then
    stages.dvc(params.root, "repro", "settings")
    plan = stages.plan(stages.graph(pipeline.layout(params)), stages.changed(params), targets)
    total = len(pipeline.stages(params))
    if not plan:
        print(f"0 of {total} stages to run: the study is up to date", flush=True)
        return 0
    base = home.prepare(plan)
    with clusters.open_cluster(kind, opts) as cluster, _connect(cluster, kind) as client:
        print(f"{len(plan)} of {total} stages to run on the {cluster.describe}"
              + (f"; dashboard {cluster.dashboard}" if cluster.dashboard else ""), flush=True)
        study = Study(params, client, plan, base, cluster.gpus, tracking_uri, out)
        study.run()
    with stop.deferred():  # a signal now waits for the record of what ran (one `dvc commit`)
        home.record(list(study.results.values()), study.plan)
    print(f"{len(study.results)} stages ran and are recorded in dvc.lock", flush=True)
    failed = [f for f in study.failures if f.code != stop.EXIT_RESUME]
    if study.failures and not failed:  # stopped by a signal: the next `stilts study` continues
        print(f"stilts: {study.failures[-1].message}", file=sys.stderr, flush=True)
        return stop.EXIT_RESUME
    if failed:
        first = failed[0]
        log = Path(params.root) / ".stilts" / "logs" / f"{first.stage}.log"
        print(f"stilts: error: {first} (log: {log})", file=sys.stderr, flush=True)
        return first.code or 1
    return 0
