"""Which stages of the study's DVC pipeline are out of date, and the graph between them.

DVC decides what changed (`dvc status`); everything downstream of a changed stage is out of date
too. Each stage here knows the stages producing its inputs, in this run (`upstream`) or already
recorded in a dvc.lock (`inputs`: a worker without the project's files fetches their outputs).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field

from stilts.errors import StiltsError

TRAINING = ("sweep-", "intermediate-", "transfer-")  # the stages that train: they take a GPU share


@dataclass
class Stage:
    name: str
    file: str  # the dvc.yaml holding it, relative to the project root
    address: str  # how DVC names it on the command line
    cmd: str
    upstream: list[str] = field(default_factory=list)  # out-of-date stages producing its deps
    inputs: list[str] = field(default_factory=list)  # every stage producing its deps
    uncached: list[str] = field(default_factory=list)  # outputs with `cache: false` (not in the DVC cache)
    downstream: int = 0  # out-of-date stages that wait for it, directly or not

    @property
    def trains(self) -> bool:
        return self.name.startswith(TRAINING)


def _paths(entries: list) -> list[tuple[str, bool]]:
    """(path, cached) for each entry of a stage's outs, metrics or plots."""
    out = []
    for e in entries:
        if isinstance(e, dict):
            (path, opts), = e.items()
            out.append((path, (opts or {}).get("cache", True)))
        else:
            out.append((e, True))
    return out


def changed(params) -> set[str]:
    """The stages `dvc status` reports changed (names without their dvc.yaml path)."""
    out = subprocess.run(["dvc", "status", "--json"], cwd=params.root, capture_output=True, text=True)
    if out.returncode:
        raise StiltsError(f"dvc status failed: {((out.stderr or out.stdout).strip().splitlines() or ['?'])[-1]}")
    return {name.split(":")[-1] for name in json.loads(out.stdout or "{}")}


def plan(params, changed_names: set[str] | None = None) -> list[Stage]:
    """The out-of-date stages, each after the stages it depends on."""
    from stilts import pipeline

    stages: dict[str, Stage] = {}
    produces: dict[str, str] = {}
    deps: dict[str, list[str]] = {}
    for file, group in pipeline.layout(params).items():
        for name, st in group.items():
            address = name if file == "dvc.yaml" else f"{file}:{name}"
            outs = _paths(st.get("outs", []) + st.get("metrics", []) + st.get("plots", []))
            stages[name] = Stage(name, file, address, st["cmd"], uncached=[p for p, cached in outs if not cached])
            produces |= {p: name for p, _ in outs}
            deps[name] = list(st.get("deps", []))
    for name, st in stages.items():
        st.inputs = list(dict.fromkeys(produces[d] for d in deps[name] if d in produces))
    todo = set(changed(params) if changed_names is None else changed_names) & set(stages)
    grew = True
    while grew:
        grew = False
        for name, st in stages.items():
            if name not in todo and any(i in todo for i in st.inputs):
                todo.add(name)
                grew = True
    ordered: list[Stage] = []
    placed: set[str] = set()
    pending = [n for n in stages if n in todo]  # the pipeline's own order, inputs first
    while pending:
        ready = [n for n in pending if all(i in placed or i not in todo for i in stages[n].inputs)]
        if not ready:
            raise StiltsError(f"the pipeline has a cycle through stage '{pending[0]}'")
        for n in ready:
            stages[n].upstream = [i for i in stages[n].inputs if i in todo]
            ordered.append(stages[n])
            placed.add(n)
        pending = [n for n in pending if n not in placed]
    below = {st.name: set() for st in ordered}
    for st in reversed(ordered):
        for up in st.upstream:
            below[up] |= {st.name} | below[st.name]
    for st in ordered:
        st.downstream = len(below[st.name])
    return ordered
