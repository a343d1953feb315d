"""`stilts study --jobs N`: run the out-of-date cells of the pipeline N at a time, then record them in DVC.

DVC runs one stage at a time and two `dvc repro` processes in one repository fight over its lock.
Here the stage commands run as a small scheduler's subprocesses (a stage starts when the stages
producing its inputs have finished), each pinned to one device (`--devices 0,1,...` sets
CUDA_VISIBLE_DEVICES) or to its share of the CPU cores (OMP_NUM_THREADS); then one
`dvc commit` records the stages that ran, so the next `dvc repro` has nothing to do.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from stilts.errors import StiltsError


def _out_of_date(params, stages: dict) -> set[str]:
    """Stages DVC reports changed, and everything downstream of them."""
    out = subprocess.run(["dvc", "status", "--json"], cwd=params.root, capture_output=True, text=True)
    if out.returncode:
        raise StiltsError(f"dvc status failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}")
    changed = {name.split(":")[-1] for name in json.loads(out.stdout or "{}")}
    producers = {o: n for n, st in stages.items() for o in st.get("outs", [])}
    todo = set(changed) & set(stages)
    grew = True
    while grew:
        grew = False
        for name, st in stages.items():
            if name not in todo and any(producers.get(d) in todo for d in st.get("deps", [])):
                todo.add(name)
                grew = True
    return todo


def run(params, jobs: int, devices: list[str] | None = None) -> int:
    from stilts import pipeline

    pipeline.write(params)
    stages = pipeline.stages(params)
    todo = _out_of_date(params, stages)
    producers = {o: n for n, st in stages.items() for o in st.get("outs", [])}
    needs = {n: {producers[d] for d in stages[n].get("deps", []) if producers.get(d) in todo} for n in todo}
    slots = list(devices) if devices else [None] * jobs
    threads = max(1, (os.cpu_count() or 1) // len(slots))
    running: dict[str, tuple[subprocess.Popen, int]] = {}
    done: list[str] = []
    failed = None
    print(f"{len(todo)} of {len(stages)} stages to run, {len(slots)} at a time", flush=True)
    while (todo or running) and failed is None:
        free = [i for i in range(len(slots)) if i not in {s for _, s in running.values()}]
        ready = sorted(n for n in todo if not needs[n] & (todo | set(running)))
        for name, slot in zip(ready, free):
            env = dict(os.environ)
            if slots[slot] is not None:
                env["CUDA_VISIBLE_DEVICES"] = str(slots[slot])
            else:
                env["OMP_NUM_THREADS"] = str(threads)
            print(f"running '{name}'" + (f" on device {slots[slot]}" if slots[slot] is not None else ""), flush=True)
            running[name] = (subprocess.Popen(stages[name]["cmd"], shell=True, cwd=params.root, env=env), slot)
            todo.discard(name)
        time.sleep(0.2)
        for name, (proc, _) in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                if proc.returncode:
                    failed = (name, proc.returncode)
                else:
                    done.append(name)
    for name, (proc, _) in running.items():  # after a failure: let the others finish, then stop
        if proc.wait() == 0:
            done.append(name)
    if done:
        where = pipeline.addresses(params)
        targets = [where[name] for name in done]
        subprocess.run(["dvc", "commit", "--force", "--quiet", *targets], cwd=params.root, check=False)
    if failed:
        print(f"stage '{failed[0]}' failed with exit code {failed[1]}; {len(done)} stages recorded", flush=True)
        return failed[1]
    print(f"{len(done)} stages ran and are recorded in dvc.lock", flush=True)
    return 0
