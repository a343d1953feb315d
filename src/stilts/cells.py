"""One cell of the study = one training run: data → model → train → tracking → outputs.

intermediate(task, restart)      → models/intermediate/<task>/r<k>/      (checkpoint, safetensors)
transfer(source, task, restart)  → results/<source>/<task>/r<k>.json     (source "none" = baseline)
sweep(task)                      → results/sweep/<task>.json             (one cell per grid point)
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from pathlib import Path

from stilts import __version__, cell_outputs, remote_state
from stilts.config import parse_source, source_name
from stilts.errors import StiltsError
from stilts.io import atomic_write_json, read_json, remove_partial
from stilts.seeds import seed_for
from stilts.tasks import registry

BASELINE = "none"


def checkpoint_dir(params, task: str, restart: int) -> Path:
    return params.path("models/intermediate") / task / f"r{restart}"


def result_path(params, source: str, task: str, restart: int) -> Path:
    return params.path("results") / source / task / f"r{restart}.json"


def _settings(params, role: str, task_name: str, size: int | None, settings):
    """The cell's training settings, where each came from, and whether the encoder is frozen."""
    from stilts.sweep import settings_for

    setting_source = {}
    if settings is None:
        settings, setting_source = settings_for(params, task_name)
    if size is not None:
        settings = dataclasses.replace(settings, max_train_examples=size)
    # frozen probing: probe runs and the sweeps of probe tasks; the lr is the frozen one unless set or swept
    frozen = params.study.probe_mode == "frozen" and role in ("probe", "sweep") and params.role_of(task_name) == "probe"
    if frozen and role == "probe" and setting_source.get("lr") not in ("override", "sweep"):
        settings = dataclasses.replace(settings, lr=params.study.frozen_probe_lr)
        setting_source = {**setting_source, "lr": "study.frozen_probe_lr"}
    return settings, setting_source, frozen


def _datasets(params, task_name: str, settings):
    from stilts import data, modeling

    tokenizer = modeling.load_tokenizer(params.model)
    train_ds = data.features(params, task_name, "train", tokenizer, settings.max_seq_length)
    dev_ds = data.features(params, task_name, "validation", tokenizer, settings.max_seq_length)
    if settings.max_train_examples and len(train_ds) > settings.max_train_examples:
        # a fixed subset (same for every restart and source), so restarts differ only in their seeds
        train_ds = train_ds.shuffle(seed=0).select(range(settings.max_train_examples))
    return tokenizer, train_ds, dev_ds


@dataclasses.dataclass
class _Mlm:
    """Masked LM in an intermediate cell: its loss before/after (mlm.measure), or mixed into training (mlm.tasks)."""
    model: object = None
    tags: dict = dataclasses.field(default_factory=dict)
    eval: object = None  # the features the loss is measured on
    batches: object = None  # the MLM batches mixed into training
    ratio: float = 0.0
    metrics: dict = dataclasses.field(default_factory=dict)


def _mlm(params, role: str, task_name: str, settings, tokenizer, train_examples: int, seed: int) -> _Mlm:
    from stilts import mlm, modeling

    out, mixing = _Mlm(), role == "intermediate" and task_name in params.mlm.tasks
    if not (role == "intermediate" and (params.mlm.measure or mixing)):
        return out
    out.model, why = mlm.load_mlm_model(params.model.name, params.model.revision, modeling.attn_for(params, settings))
    if out.model is None:
        if mixing:
            raise StiltsError(f"mlm.tasks: MLM mixing for '{task_name}' needs a masked-LM head, but "
                              f"'{params.model.name}': {why}")
        out.tags["mlm_unavailable"] = why
        return out
    lines = mlm.corpus(params, params.mlm.eval_examples + (params.mlm.corpus_examples if mixing else 0))
    out.eval = mlm.features(tokenizer, lines[:params.mlm.eval_examples], settings.max_seq_length)
    out.metrics["mlm_loss_before"] = mlm.loss(out.model, tokenizer, out.eval, params.mlm.probability)
    if mixing:
        mix = mlm.features(tokenizer, lines[params.mlm.eval_examples:], settings.max_seq_length)
        out.ratio = mlm.mixing_ratio(train_examples, len(mix), params.mlm.cap)
        out.batches = mlm.batches(tokenizer, mix, settings.batch_size, params.mlm.probability, seed)
        out.tags |= {"mlm_mixing": "true", "mlm_ratio": round(out.ratio, 4)}
    return out


def _tags(params, task, role: str, source: str, restart: int, extra: dict) -> dict:
    tags = {"role": role, "source": source, "task": task.name, "restart": restart,
            "cell": f"{source}/{task.name}/r{restart}", "type": task.type, "metric": task.metric}
    if role == "probe":
        tags["probe_mode"] = params.study.probe_mode
    tags |= extra
    src_task, src_size = parse_source(source)
    if source != BASELINE:
        tags |= {"source_task": src_task, "source_size": src_size if src_size is not None else "full"}
    return tags


def _logged(params, task, settings, setting_source: dict, cell: dict, datasets: tuple, accelerator) -> dict:
    """The run's params: every effective setting, where it came from, the data and the runtime."""
    import torch

    from stilts import modeling
    from stilts.step import step_options
    from stilts.train import resolve_mixed_precision

    train_ds, dev_ds = datasets
    meta = read_json(params.path(params.data.processed_dir) / task.name / "meta.json")
    return {"model": dataclasses.asdict(params.model), "train": dataclasses.asdict(settings),
            "settings_source": setting_source,
            "task": {"name": task.name, "type": task.type, "metric": task.metric, "family": task.family},
            "cell": cell,
            "data": {"train_examples": len(train_ds), "dev_examples": len(dev_ds), "data_hash": meta["data_hash"]},
            "runtime": {"mixed_precision": resolve_mixed_precision(settings.mixed_precision),
                        "attn_implementation": modeling.attn_for(params, settings),
                        "compiled_step": step_options(settings, accelerator).compiled,
                        "device": str(accelerator.device), "num_processes": accelerator.num_processes,
                        "torch": torch.__version__, "stilts": __version__, "python": platform.python_version()}}


def _run_cell(params, *, role: str, source: str, task_name: str, restart: int, init_from: Path | None,
              save_to: Path | None, size: int | None = None, settings=None, extra_tags: dict | None = None,
              output: Path | None = None) -> dict:
    """settings → data → model → (already finished? skip) → an MLflow run around the training loop → outputs."""
    import torch

    from stilts import data, modeling, resume, tasktypes, tracking
    from stilts.tracking import twins
    from stilts.tracking.datasets import log_datasets
    from stilts.train import make_accelerator, train

    task = data.task_with_labels(params, registry.get(task_name))
    settings, setting_source, frozen = _settings(params, role, task_name, size, settings)
    seed = seed_for(role, restart, settings.seed)
    torch.manual_seed(seed)
    tokenizer, train_ds, dev_ds = _datasets(params, task_name, settings)
    mlm = _mlm(params, role, task_name, settings, tokenizer, len(train_ds), seed)
    model = modeling.build(params, task, settings, init_from=init_from, mlm_model=mlm.model, frozen=frozen)
    accelerator = make_accelerator(settings)
    tags = _tags(params, task, role, source, restart, (extra_tags or {}) | mlm.tags)
    cell = {"role": role, "source": source, "restart": restart, "seed": seed, "frozen_encoder": frozen,
            "init_from": str(init_from) if init_from else "pretrained"}
    logged = _logged(params, task, settings, setting_source, cell, (train_ds, dev_ds), accelerator)
    fingerprint = _fingerprint(params, settings, logged, init_from)
    state_dir = params.path(".stilts/state") / f"{source}__{task_name}__r{restart}__{role}-{fingerprint[:12]}"
    main = accelerator.is_main_process
    done = _finished(output, fingerprint, save_to)
    if done is not None:
        print(f"{source}/{task_name}/r{restart}: already finished with these settings ({output}); skipped")
        if save_to is not None and main:
            cell_outputs.complete_logging(params, done, save_to)
        return done | {"state_dir": state_dir}
    twin = twins.finished_twin(params, tags["cell"], role, fingerprint)
    if twin is not None:
        print(f"{tags['cell']}: already finished with these settings (run {twin.get('mlflow_run_id')}); "
              "its result is restored, nothing is trained")
        if main and twin.get("mlflow_run_id"):
            twins.supersede(params, tags["cell"], role, keep=twin["mlflow_run_id"])
        return twin | {"state_dir": state_dir}
    resume.remove_partial(state_dir)
    resume.discard_damaged(state_dir)
    remote_state.fetch_newer(params, state_dir)
    previous = resume.read_loop(state_dir)
    resume_id = previous.get("run_id") if previous else None
    name = f"intermediate:{task_name}:r{restart}" if role == "intermediate" else \
        f"{role}:{source}->{task_name}:r{restart}"
    with (tracking.tracked(params, name, tags, resume_id=resume_id) if main else _nullrun()) as run:
        if main:
            tracking.end_stale_runs(params, tags["cell"], keep=run.id)
            if run.id != resume_id:
                run.log_params(logged | {"fingerprint": fingerprint})
            log_datasets(run, params, task_name, {"train": len(train_ds), "validation": len(dev_ds)})
        result = train(model, task, settings, train_ds, dev_ds, tasktypes.get(task.type).collator(tokenizer),
                       accelerator, seed, log=(run.log_step if main else None), keep_best_state=save_to is not None,
                       mlm_batches=mlm.batches, mlm_ratio=mlm.ratio, state_dir=state_dir,
                       state_extra={"run_id": run.id}, save_every=settings.save_every,
                       after_save=remote_state.uploader(state_dir),
                       keep_predictions=role == "target", log_flush=run.flush if main else None)
        majority = tasktypes.get(task.type).majority_score(task, dev_ds)
        summary = cell_outputs.result_summary(task, tags, seed, fingerprint, result, majority, run.id if main else None)
        if main:
            run.set_tags(result.compile_tags)
            cell_outputs.log_outputs(run, params, task, settings, summary, result, save_to,
                                     accelerator.unwrap_model(model), tokenizer, mlm, dev_ds)
            twins.log_result(run, summary)
            if output is not None and save_to is None:  # in the run: a result that cannot be written fails it
                atomic_write_json(output, summary)
            twins.supersede(params, tags["cell"], role, keep=run.id)
    accelerator.wait_for_everyone()
    summary["state_dir"] = state_dir
    return summary


def _finished(output: Path | None, fingerprint: str, save_to: Path | None) -> dict | None:
    """The cell's output when it is there, intact, and made with this fingerprint; a damaged one is said and
    made again."""
    import sys

    from stilts.modeling import checkpoint_damaged

    if output is None or not output.is_file():
        return None
    try:
        done = read_json(output)
    except ValueError:
        print(f"stilts: {output}: not valid JSON (truncated or altered); the cell runs again", file=sys.stderr)
        return None
    problem = checkpoint_damaged(save_to, done) if save_to is not None else None
    if problem:
        print(f"stilts: {problem}; the checkpoint is trained again", file=sys.stderr)
        return None
    return done if done.get("fingerprint") == fingerprint else None


def _fingerprint(params, settings, logged: dict, init_from: Path | None) -> str:
    """What makes two runs of a cell the same run: settings, data, starting weights, seed, model."""
    from stilts.io import sha256_file, sha256_text
    from stilts.modeling import CHECKPOINT_META

    # the checkpoint's stilts.json is rewritten with its weights (one atomic folder) and names the run that
    # made them: hashing it identifies the starting weights without reading them again (GBs for large models)
    start = sha256_file(init_from / CHECKPOINT_META) if init_from is not None else params.model.name
    keys = {k: logged[k] for k in ("model", "task", "cell")} | {"data": logged["data"]["data_hash"]}
    return sha256_text(json.dumps(dataclasses.asdict(settings), sort_keys=True, default=str),
                       json.dumps(keys, sort_keys=True, default=str), start,
                       json.dumps(dataclasses.asdict(params.mlm), sort_keys=True, default=str))


def _clear_state(state_dir: Path) -> None:
    from stilts import resume  # torch: imported only where training happens

    resume.clear(state_dir)
    remote_state.clear(state_dir)


class _nullrun:
    id = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def sweep(params, task: str) -> dict:
    """Sweep `sweep.grid` for one task from the pretrained encoder: one child run per grid point under a
    sweep run; the best point is written to results/sweep/<task>.json (stilts.sweep says how it is used)."""
    from stilts import sweep as grid
    from stilts import tracking

    if not params.sweep.grid:
        raise StiltsError(f"{params.source}: 'sweep.grid' is empty")
    points, restart, explicit = grid.points(params, task), params.sweep.restart, params.task_overrides.get(task, {})
    with tracking.tracked(params, f"sweep:{task}", {"role": "sweep", "source": BASELINE, "task": task,
                                                      "restart": restart, "cell": f"sweep/{task}"}) as parent:
        tracking.end_stale_runs(params, f"sweep/{task}", keep=parent.id)
        parent.log_params({"sweep": {"grid": params.sweep.grid, "overrides": params.sweep.overrides,
                                     "points": len(points)}})
        results = []
        for i, point in enumerate(points):
            settings = dataclasses.replace(params.train, **{**point, **params.sweep.overrides, **explicit})
            tags = {"mlflow.parentRunId": parent.id, "sweep_point": i,
                    "sweep_values": ", ".join(f"{k}={v}" for k, v in point.items())}
            s = _run_cell(params, role="sweep", source=BASELINE, task_name=task, restart=restart, init_from=None,
                          save_to=None, settings=settings, extra_tags=tags)
            _clear_state(s.pop("state_dir"))
            results.append({"point": point, "score": s["score"], "metrics": s["metrics"],
                            "mlflow_run_id": s["mlflow_run_id"]})
        best = grid.choose(results)
        parent.log_metrics({"best_score": results[best]["score"], "best_point": best})
        parent.set_tags({"chosen": ", ".join(f"{k}={v}" for k, v in results[best]["point"].items())})
    out = {"task": task, "chosen": {k: v for k, v in results[best]["point"].items() if k not in explicit},
           "best_point": best, "points": results, "grid": params.sweep.grid, "overrides": params.sweep.overrides,
           "inputs": grid.inputs_hash(params, task)}
    atomic_write_json(grid.result_path(params, task), out)
    return out


def _check_restart(restart: int) -> None:
    if restart < 0:
        raise StiltsError(f"--restart must be ≥ 0, got {restart}")


def intermediate(params, task: str, restart: int, size: int | None = None) -> dict:
    """Train `task` from the pretrained encoder (on its first `size` examples, if given)."""
    registry.get(task)
    _check_restart(restart)
    if size is not None and size < 1:
        raise StiltsError(f"--size must be ≥ 1, got {size}")
    source = source_name(task, size)

    out = checkpoint_dir(params, source, restart)
    remove_partial(out)  # a checkpoint a kill left half-written
    summary = _run_cell(params, role="intermediate", source=source, task_name=task, restart=restart,
                        init_from=None, save_to=out, size=size, output=out / "stilts.json")
    _clear_state(summary.pop("state_dir"))
    return summary


def transfer(params, source: str, task: str, restart: int) -> dict:
    registry.get(task)
    _check_restart(restart)
    init_from = None
    if source != BASELINE:
        src_task, size = parse_source(source)
        registry.get(src_task)
        k = params.intermediate_restart(restart)
        init_from = checkpoint_dir(params, source, k)
        if not (init_from / "stilts.json").is_file():
            how = f" --size {size}" if size else ""
            raise StiltsError(f"{init_from}: no intermediate checkpoint; run `stilts intermediate --task {src_task}"
                              f"{how} --restart {k}` first (or `dvc repro`)")
    role = params.role_of(task)

    out = result_path(params, source, task, restart)
    summary = _run_cell(params, role=role, source=source, task_name=task, restart=restart,
                        init_from=init_from, save_to=None, output=out)
    state_dir = summary.pop("state_dir")
    if int(os.environ.get("RANK", "0")) == 0:
        atomic_write_json(out, summary)  # also a twin's restored result; a failed run never leaves one
        _clear_state(state_dir)
    return summary
