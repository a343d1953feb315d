"""K cells logging to one MLflow store at once: metrics/s held, logging latency, nothing lost.

    python benchmarks/logging_load.py --cells 16 --steps 200 --step-seconds 0.05

Each cell is a process that does what a study cell does to MLflow, through stilts' own tracking code: it
starts a run with the cell's tags and params, then logs `train_loss` and `lr` at every step (one batched
call), dev metrics every 10 steps, and ends the run FINISHED; between steps it sleeps `--step-seconds`
(a small cell's training step). Every cell starts at the same moment. Two stores, each
logged to in two ways, in the same run:
  sqlite   the project's own mlflow.db (each cell writes to it directly, WAL mode)
  server   one `stilts server` (sqlite behind it, one worker process) on 127.0.0.1
  sync     a request per step (`log_batch`)
  batched  what cells do: the training loop's metrics through `Run.log_step`, which keeps them and
           writes them in one request every few seconds; the rest is written when the run ends.
Latency is per step's logging call; "end s" is the longest
wait for a run to end (batched: including writing the metrics it still keeps). Afterwards every run's metric
history is read back and counted: a lost metric fails the benchmark. The
server's resident memory (with its workers) is sampled every 0.5 s. Last line: the ratios of each row's
metrics/s against sqlite sync's, and the metrics lost and cells failed (both must be 0).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import bench_env

DEV_EVERY = 10
DEV_METRICS = ("dev_accuracy", "dev_f1", "dev_loss", "dev_examples")


def cell(rank: int, args, uri: str, batched: bool, go, out) -> None:
    import numpy as np

    from stilts import config, tracking

    os.environ["MLFLOW_TRACKING_URI"] = uri
    params = config.Params()
    params.root = Path(args.root)
    params.mlflow.experiment = "load"
    run = tracking.start_run(params, f"cell-{rank}", {"role": "target", "cell": f"none/load/r{rank}"})
    run.log_params({"train": {"lr": 1e-5, "batch_size": 16}, "cell": {"rank": rank}})
    go.wait()
    latencies = []
    for step in range(1, args.steps + 1):
        time.sleep(args.step_seconds)
        t = time.perf_counter()
        log = run.log_step if batched else run.log_metrics
        log({"train_loss": 1.0 / step, "lr": 1e-5 * step}, step)
        if step % DEV_EVERY == 0:
            log({k: step / 1000 for k in DEV_METRICS}, step)
        latencies.append(time.perf_counter() - t)
    t = time.perf_counter()
    run.finish()  # writes the step metrics still kept
    out.put((rank, run.id, np.array(latencies), time.perf_counter() - t))


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(root / "server.log", "ab")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "stilts"), "server", "--port", str(port),
                             "--workers", "1"], cwd=root, stdout=log, stderr=log, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200:
                return proc, uri
        time.sleep(0.5)
    proc.kill()
    sys.exit("the MLflow server did not start")


def rss_mb(pid: int) -> float:
    import psutil

    try:
        p = psutil.Process(pid)
        return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2**20
    except psutil.Error:
        return 0.0


def measure(args, store: str, uri: str, batched: bool, server_pid: int | None) -> dict:
    import numpy as np
    from mlflow.tracking import MlflowClient

    ctx = mp.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=cell, args=(i, args, uri, batched, go, out)) for i in range(args.cells)]
    for p in procs:
        p.start()
    time.sleep(args.settle)  # every cell has imported MLflow and started its run
    memory, sampling = [], [True]

    def sample():
        while sampling[0]:
            memory.append(rss_mb(server_pid))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    if server_pid:
        sampler.start()
    start = time.perf_counter()
    go.set()
    done, deadline = [], time.monotonic() + args.limit
    while len(done) < len(procs) - sum(1 for p in procs if p.exitcode):  # a cell that failed sends nothing
        if time.monotonic() > deadline:
            for p in procs:
                p.kill()
            raise SystemExit(f"{store}: the cells did not finish within {args.limit:.0f} s; stopped")
        with contextlib.suppress(queue.Empty):
            done.append(out.get(timeout=1))
    wall = time.perf_counter() - start
    sampling[0] = False
    for p in procs:
        p.join(60)  # each has sent its result: only its exit is left
        if p.is_alive():
            p.kill()
    failed = [p.exitcode for p in procs if p.exitcode]
    client = MlflowClient(tracking_uri=uri)
    expected = {"train_loss": args.steps, "lr": args.steps} | {k: args.steps // DEV_EVERY for k in DEV_METRICS}
    lost = sum(max(0, n - len(client.get_metric_history(run_id, key))) for _, run_id, _, _ in done
               for key, n in expected.items())
    lat = np.concatenate([d[2] for d in done]) if done else np.zeros(1)
    values = args.cells * sum(expected.values())
    return {"store": store + (" batched" if batched else " sync"), "cells": args.cells, "failed": len(failed),
            "lost": lost, "metrics_per_s": values / wall, "p50_ms": 1000 * np.percentile(lat, 50),
            "p99_ms": 1000 * np.percentile(lat, 99), "wall_s": wall,
            "end_s": max((d[3] for d in done), default=0.0),
            "server_mb": f"{memory[0]:.0f}→{max(memory):.0f}" if memory else "-"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=16)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--step-seconds", type=float, default=0.05)
    ap.add_argument("--settle", type=float, default=20.0, help="seconds for the cells to start before they log")
    ap.add_argument("--limit", type=float, default=1800, help="seconds the cells of one arm may take before the "
                    "benchmark stops")
    ap.add_argument("--stores", nargs="+", default=["sqlite", "server"], choices=("sqlite", "server"))
    args = ap.parse_args(argv)
    bench_env.quiet()
    print(f"# {bench_env.describe_machine()}")
    print(f"# {args.cells} cells × {args.steps} steps, a step every {args.step_seconds} s: 2 metrics a step, "
          f"{len(DEV_METRICS)} every {DEV_EVERY}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="stilts-load-") as tmp:
        args.root = str(Path(tmp) / "sqlite")
        Path(args.root).mkdir()
        for batched in (False, True) if "sqlite" in args.stores else ():
            rows.append(measure(args, "sqlite", f"sqlite:///{Path(args.root) / 'mlflow.db'}", batched, None))
        args.root = str(Path(tmp) / "server")
        Path(args.root).mkdir()
        server, uri = start_server(Path(args.root))
        try:
            for batched in (False, True):
                rows.append(measure(args, "server", uri, batched, server.pid))
        finally:
            os.killpg(server.pid, 15)
            server.wait(60)
    print(f"{'store':<13} {'cells':>5} {'failed':>6} {'lost':>5} {'metrics/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'wall s':>6} {'end s':>5} {'server MB':>10}")
    for r in rows:
        print(f"{r['store']:<13} {r['cells']:>5} {r['failed']:>6} {r['lost']:>5} {r['metrics_per_s']:9.1f} "
              f"{r['p50_ms']:7.1f} {r['p99_ms']:7.1f} {r['wall_s']:6.1f} {r['end_s']:5.1f} {r['server_mb']:>10}")
    base, first = rows[0]["metrics_per_s"], rows[0]["store"].replace(" ", "_")
    ratios = [f"{r['store'].replace(' ', '_')}_vs_{first}={r['metrics_per_s'] / base:.2f}" for r in rows[1:]]
    print(" ".join(ratios) + f" lost={sum(r['lost'] for r in rows)} failed={sum(r['failed'] for r in rows)}")
    return 1 if any(r["lost"] or r["failed"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
