"""Training state on disk, so a killed cell resumes instead of restarting (and ends bit-identical on CPU).

The state of a cell lives in .stilts/state/<cell>-<fingerprint>/ (outside DVC outputs, which DVC
deletes before rerunning a stage): model, best model and optimizer tensors as safetensors, the
scheduler, RNG states and loop position as JSON. No pickle is written or read. Each save goes to
a temporary folder that replaces the previous state in one rename, so a kill during a save leaves
the previous state intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from stilts.io import atomic_dir, damaged, file_records, remove_partial


def fault(point: str) -> None:
    """Fault injection for the resume tests: STILTS_FAULT=<point>:<n> SIGKILLs this process at the n-th time
    here; <point>:<n>:group SIGKILLs its whole process group (e.g. an `mlflow run` and everything under it)."""
    spec = os.environ.get("STILTS_FAULT", "")
    if not spec.startswith(point + ":"):
        return
    key = f"_stilts_fault_{point}"
    count = globals().get(key, 0) + 1
    globals()[key] = count
    n, _, scope = spec[len(point) + 1:].partition(":")
    if count == int(n):
        import signal

        if scope == "group":
            os.killpg(0, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


def _split_optimizer(state: dict) -> tuple[dict, dict]:
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, entry in state["state"].items():
        rest["state"][str(pid)] = {}
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                rest["state"][str(pid)][name] = value
    return tensors, rest


def _join_optimizer(tensors: dict, rest: dict) -> dict:
    state = {int(pid): dict(entry) for pid, entry in rest["state"].items()}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def _rng_state() -> tuple[dict, dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    return tensors, {"python": [py[0], list(py[1]), py[2]],
                     "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}


def _set_rng_state(tensors: dict, info: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    v, internal, gauss = info["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, *rest = info["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))


def save(path: Path, model, optimizer, scheduler, loop: dict, best_state: dict | None) -> None:
    from safetensors.torch import save_file, save_model

    with atomic_dir(path) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        fault("state_write")
        opt_tensors, opt_rest = _split_optimizer(optimizer.state_dict())
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        rng_tensors, rng_info = _rng_state()
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        if best_state is not None:
            best = path / "best.safetensors"
            if loop.get("best_saved_step") == loop.get("best_step") and best.is_file():
                shutil.copy2(best, tmp / "best.safetensors")  # unchanged since the last save
            else:
                save_file({k: v.contiguous() for k, v in best_state.items()}, str(tmp / "best.safetensors"))
            loop["best_saved_step"] = loop.get("best_step")
        meta = {"loop": loop, "optimizer": opt_rest, "scheduler": scheduler.state_dict(), "rng": rng_info,
                "files": file_records(tmp)}  # checked before the state is used (`discard_damaged`)
        (tmp / "state.json").write_text(json.dumps(meta, default=float))


def load(path: Path, model, optimizer, scheduler) -> tuple[dict, dict | None] | None:
    """Restore model, optimizer, scheduler and RNG from `path`; return (loop position, best state)."""
    from safetensors.torch import load_file, load_model

    if not (path / "state.json").is_file():
        return None
    meta = json.loads((path / "state.json").read_text())
    load_model(model, str(path / "model.safetensors"))
    optimizer.load_state_dict(_join_optimizer(load_file(str(path / "optimizer.safetensors")), meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    _set_rng_state(load_file(str(path / "rng.safetensors")), meta["rng"])
    best = load_file(str(path / "best.safetensors")) if (path / "best.safetensors").is_file() else None
    return meta["loop"], best


def discard_damaged(path: Path) -> None:
    """A saved state whose files differ from the sizes and hashes it recorded (a copy cut short, a crash
    in an older stilts, an altered file) is never loaded: it is said in one line and removed, and the cell
    starts over."""
    import sys

    if not path.is_dir():
        return
    try:
        meta = json.loads((path / "state.json").read_text())
        problem = damaged(path, meta["files"])
    except FileNotFoundError:
        problem = f"{path / 'state.json'}: missing"
    except (ValueError, KeyError, TypeError):
        problem = f"{path / 'state.json'}: not a complete state (truncated or altered)"
    if problem:
        print(f"stilts: {problem}; the saved training state is discarded and the cell starts over",
              file=sys.stderr)
        clear(path)


def read_loop(path: Path) -> dict | None:
    """The saved loop position (with the MLflow run id) of a state, without loading tensors."""
    try:
        return json.loads((path / "state.json").read_text())["loop"]
    except (OSError, ValueError, KeyError):
        return None


def clear(path: Path) -> None:
    remove_partial(path)
    shutil.rmtree(path, ignore_errors=True)
