"""The `stilts` command: parses arguments and calls one function per command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from stilts import stop
from stilts.errors import StiltsError


def _params(args):
    from stilts import config

    return config.load(args.params, args.set)


def _params_or_defaults(args):
    """For commands that also work outside a study (no params.yaml): the defaults, rooted here, with --set."""
    from stilts import config

    if os.path.exists(args.params):
        return _params(args)
    if args.set:
        return config.use_task_files(config.from_dict(config.apply_overrides({}, args.set), "--set", Path(".")))
    return config.use_task_files(config.Params())


def cmd_tasks(args):
    from stilts import data
    from stilts.tasks import registry
    from stilts.tasks.files import shown

    params = _params_or_defaults(args)
    tasks = [t for t in registry.all_tasks() if not args.role or args.role in t.roles]
    print(f"{'task':<14} {'type':<15} {'metric':<17} {'roles':<21} {'source':<46} data")
    for t in tasks:
        files = data.task_files(params, t)
        if t.generator:
            source, present = f"generator {t.generator}", "generated"
        else:
            source = ", ".join(dict.fromkeys(p.name for p in files.values())) + (f" | hub {t.hub}" if t.hub else "")
            source = f"{shown(Path(t.declared_in))}: {source}" if t.declared_in else source
            present = "present" if all(p.is_file() for p in files.values()) else \
                f"missing in {files['train'].parent}/" + (" (bring your own)" if t.licence_note else "")
        print(f"{t.name:<14} {t.type:<15} {t.metric:<17} {','.join(t.roles) or '-':<21} {source:<46} {present}")
    print(f"{len(tasks)} tasks; {sum(all(p.is_file() for p in data.task_files(params, t).values()) for t in tasks)}"
          f" with data present under {params.path(params.data.raw_dir)}/")


def cmd_prepare(args):
    from stilts import data
    from stilts.io import read_json

    params = _params(args)
    for task in args.task or params.require_tasks():
        out = data.prepare(params, task)
        print(f"prepared {task} → {out}")
        meta = read_json(out / "meta.json")
        if meta.get("labels_from"):
            print(f"  labels read from {meta['labels_from']}: {', '.join(meta['labels'])} (declare 'labels' in "
                  f"the task file to fix their order)")


def cmd_intermediate(args):
    from stilts import cells

    s = cells.intermediate(_params(args), args.task, args.restart, size=args.size)
    print(f"intermediate {args.task} r{args.restart}: dev {s['metric']} = {s['score']:.4f}")


def cmd_transfer(args):
    from stilts import cells

    s = cells.transfer(_params(args), args.source, args.task, args.restart)
    print(f"transfer {args.source}->{args.task} r{args.restart}: dev {s['metric']} = {s['score']:.4f}")


def cmd_sweep(args):
    from stilts import cells

    out = cells.sweep(_params(args), args.task)
    print(f"sweep {args.task}: chose {out['chosen'] or '(all fixed by task_overrides)'} "
          f"(score {out['points'][out['best_point']]['score']:.4f})")


def cmd_plan(args):
    from stilts import plan

    print(plan.report(_params(args), gpu=args.gpu, mfu=args.mfu, measure=not args.no_calibrate))


def cmd_analyze(args):
    from stilts.analysis import report

    params = _params(args) if not args.experiment else _params_or_defaults(args)
    if args.experiment:
        from stilts.selection.published import import_shipped

        if n := import_shipped(params, args.experiment):
            print(f"'{args.experiment}' is a grid shipped with stilts (`stilts grids`): imported its {n:,} runs into "
                  f"MLflow experiment '{args.experiment}' once; later analyses read them from there")
    out = report.run(params, experiment=args.experiment, compare_with=tuple(args.compare or ()))
    print(f"analysis written to {out}")


def cmd_import_results(args):
    from pathlib import Path

    from stilts.analysis.imports import import_results

    params = _params_or_defaults(args)
    n = import_results(params, Path(args.file), args.experiment)
    print(f"imported {n} runs into experiment '{args.experiment}'; now: stilts analyze --experiment {args.experiment}")


def cmd_export_results(args):
    from stilts.analysis.exports import export

    n, meta = export(_params(args), args.file, args.experiment, args.name, args.command_line)
    print(f"wrote {n} runs to {args.file} and their provenance to {meta}")


def cmd_rank(args):
    import dataclasses

    from stilts import config_checks
    from stilts.selection import rank, ranking_report

    params = _params_or_defaults(args)
    given = {"targets": args.targets, "candidates": args.candidates, "methods": args.method,
             "prior_experiments": args.prior_experiment}
    over = {k: [x.strip() for x in v.split(",") if x.strip()] for k, v in given.items() if v}
    if args.sample_size is not None:
        over["sample_size"] = args.sample_size
    params.rank = dataclasses.replace(params.rank, **over)
    config_checks.check_rank(params.rank, "stilts rank")
    if args.write_study and (len(params.rank.targets) != 1 or args.top < 1 or args.restarts < 1):
        raise StiltsError("rank: --write-study writes the study of one target (--targets T), with --top and "
                          "--restarts ≥ 1")
    result = rank.run(params, args.experiment)
    print(ranking_report.summary(result))
    print(f"wrote {result['out'] / rank.RANKING} and {result['out'] / rank.RANKING_EVAL}")
    if args.write_study:
        from stilts.selection import followup

        print(followup.write(params, result, params.rank.targets[0], args.top, args.restarts, Path(args.write_study)))


def cmd_grids(args):
    from stilts.selection import fetch, published

    if args.grids_command != "fetch":
        print(published.listing())
        return
    by_grid = {g: published.catalog()[g].origin for g in published.names() if published.catalog()[g].origin}
    name = by_grid.get(args.name, args.name)
    if name not in published.sources():
        from stilts.errors import did_you_mean

        known = sorted([*published.sources(), *by_grid])
        shipped = " (it ships with stilts: nothing to fetch)" if args.name in published.names() else ""
        raise StiltsError(f"grids fetch: '{args.name}' is not a fetchable grid{shipped}"
                          f"{did_you_mean(args.name, known)}; fetchable: {', '.join(published.sources())}")
    written = fetch.fetch(published.sources()[name], Path(args.from_path) if args.from_path else None)
    print(f"fetched {name} at {published.sources()[name].fetch.commit[:12]} (checksum verified) into "
          f"{fetch.cache_dir()}: {', '.join(written)}")


def cmd_pipeline(args):
    from stilts import pipeline

    params = _params(args)
    if args.check:
        pipeline.check(params)
        print("dvc.yaml is up to date")
    else:
        path = pipeline.write(params)
        print(f"wrote {path} and the pipelines/ of its sources")
        from stilts import warm

        warm.prestart()  # `dvc repro` usually follows: warm the cell server meanwhile


def cmd_settings(args):
    from stilts import pipeline, settings

    if args.set:
        raise StiltsError("settings: --set is not applied; the settings resolve the params file as it is")
    params = _params(args)
    pipeline.check(params)  # a stage added or gone (a task, a sweep) needs the pipeline written again
    written = settings.write(params)
    print(f"{len(written)} settings file(s) changed under {params.path(settings.DIR)}/")


def cmd_generate(args):
    from pathlib import Path

    from stilts import config
    from stilts.generate.suite import write_task
    from stilts.tasks import registry

    d = config.DataCfg()
    task = registry.get(args.task)
    if not task.generator:
        raise StiltsError(f"task '{args.task}' is not a generated task")
    write_task(task.generator, Path(args.out), args.train or d.generated_train,
               args.validation or d.generated_validation, args.seed if args.seed is not None else d.generated_seed)
    print(f"wrote {args.task} to {args.out}")


def cmd_server(args):
    from stilts.tracking import service
    from stilts.tracking import store as tracking_store

    params = _params_or_defaults(args)
    store = args.backend_store_uri or f"sqlite:///{(params.root / 'mlflow.db').resolve()}"
    artifacts = args.artifacts_destination or str((params.root / "mlartifacts").resolve())
    workers = service.server_workers() if args.workers is None else args.workers
    if workers < 1:
        raise StiltsError(f"server: --workers {workers}: must be ≥ 1")
    service.check_port(args.host, args.port)
    service.check_store(store, "--backend-store-uri")
    if "://" not in artifacts or artifacts.startswith("file:"):
        service.check_writable(Path(artifacts.removeprefix("file://")), "--artifacts-destination")
    if store.startswith("sqlite:///"):
        try:  # schema and WAL mode now, before the server's workers open it at once
            tracking_store.prepare_store(store)
        except Exception as e:  # noqa: BLE001 — sqlalchemy/MLflow errors: one line, exit 2
            raise StiltsError(f"server: backend store {store} cannot be used: {str(e).splitlines()[0][:300]}") \
                from None
    url = f"http://{args.host}:{args.port}"
    page = service.training_runs_url(url, tracking_store.experiment_id_if_any(store, params.mlflow.experiment))
    print(f"MLflow tracking server for {store} at {url} (artifacts in {artifacts}, {workers} worker"
          f"{'s' if workers > 1 else ''})\n"
          f"cells: stilts study --tracking-uri {url} ..., or export MLFLOW_TRACKING_URI={url}\n"
          f"training runs of '{params.mlflow.experiment}': {page}", flush=True)
    if args.open:
        service.open_when_up(args.host, args.port, page)
    service.become_server(store, args.host, args.port, artifacts, workers)


def _cluster_options(args, command: str):
    """The Dask cluster options of `study` and `select` (None without --cluster)."""
    if args.cluster:
        from stilts.engine import clusters

        if args.jobs < 1 or args.cells_per_gpu < 1:
            raise StiltsError(f"{command}: --jobs and --cells-per-gpu must be ≥ 1")
        return clusters.Options(jobs=args.jobs, devices=args.devices.split(",") if args.devices else [],
                                cells_per_gpu=args.cells_per_gpu, dashboard=args.dashboard)
    if args.jobs != 1 or args.devices or args.cells_per_gpu != 1 or args.dashboard:
        raise StiltsError(f"{command}: --jobs, --devices, --cells-per-gpu and --dashboard run cells side by side "
                          "on a Dask cluster: add --cluster local (or --cluster tcp://HOST:PORT, --cluster slurm)")
    return None


def cmd_study(args):
    from stilts import pipeline, stages, warm

    if args.set:
        raise StiltsError("study: --set is not applied to DVC stages; edit params.yaml "
                          "(or use `dvc exp run --set-param KEY=VALUE`)")
    params = _params(args)
    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    opts = _cluster_options(args, "study")
    if opts is not None:
        from stilts.engine import runner

        with stages.one_study(params.root):
            return runner.run(params, args.cluster, opts, tracking_uri)
    with stages.one_study(params.root):
        pipeline.write(params)
        warm.prestart()
        env = {"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}
        return stages.dvc(params.root, "repro", env=env, capture=False)


def cmd_select(args):
    import dataclasses

    from stilts import config_checks
    from stilts.selection import select

    if args.set:
        raise StiltsError("select: --set is not applied to the selection's DVC stages; edit the params file")
    params = _params(args)
    given = {"target": args.target, "budget": args.budget, "confident": args.confident, "hopeless": args.hopeless,
             "seed": args.seed}
    params.select = dataclasses.replace(params.select, **{k: v for k, v in given.items() if v is not None})
    config_checks.check_select(params.select, "stilts select")
    if not params.select.target:
        raise StiltsError("select: no target; give --target T (or select.target in the params file)")
    rank_over = {k: [x.strip() for x in v.split(",") if x.strip()]
                 for k, v in {"candidates": args.candidates, "prior_experiments": args.prior_experiment}.items() if v}
    params.rank = dataclasses.replace(params.rank, **rank_over)
    config_checks.check_rank(params.rank, "stilts select")
    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if args.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri  # the selection's own run logs there too
    runner = select.Runner(args.cluster, _cluster_options(args, "select"), tracking_uri)
    return select.run(params, params.select.target, args.study, runner)


def build_parser() -> argparse.ArgumentParser:
    from stilts import cli_parser

    return cli_parser.build({
        "tasks": cmd_tasks, "prepare": cmd_prepare, "sweep": cmd_sweep, "intermediate": cmd_intermediate,
        "transfer": cmd_transfer, "analyze": cmd_analyze, "import-results": cmd_import_results,
        "export-results": cmd_export_results, "plan": cmd_plan, "rank": cmd_rank, "grids": cmd_grids,
        "pipeline": cmd_pipeline, "settings": cmd_settings, "generate": cmd_generate, "server": cmd_server,
        "study": cmd_study, "select": cmd_select})


WARM_COMMANDS = ("prepare", "sweep", "intermediate", "transfer", "analyze", "rank")
TRACKED_COMMANDS = ("sweep", "intermediate", "transfer", "analyze", "import-results", "export-results", "rank",
                    "study", "select")
TRAINING_COMMANDS = ("sweep", "intermediate", "transfer")


def check_tracking(args, quick: bool = False) -> None:
    """Before a command that logs to MLflow does anything: its tracking store answers (one line, exit 2).
    `quick`: what takes milliseconds and no MLflow import (a server's port opens, a local store is writable),
    before handing the command to the cell server, which checks the rest with MLflow already imported."""
    from stilts import tracking
    from stilts.tracking import service

    given = getattr(args, "tracking_uri", None)
    uri = given or tracking.uri_for(Path(args.params).resolve().parent)
    origin = "--tracking-uri" if given else ("MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI")
                                             else "the project's default store")
    service.check_store(uri, origin, quick=quick)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    tracked = args.command in TRACKED_COMMANDS
    try:
        if args.command in WARM_COMMANDS:  # in a fork of the warm cell server where there is one, else here
            from stilts import warm

            if warm.enabled():
                if tracked:
                    check_tracking(args, quick=True)  # before a cell server starts (seconds)
                code = warm.run(argv)
                if code is not None:
                    return code
        if args.command != "server":
            stop.install()  # SIGTERM, SIGINT, SIGUSR1: save, end the run, exit EXIT_RESUME
        if tracked:
            check_tracking(args)
        if args.command in TRAINING_COMMANDS:
            from stilts import heap

            heap.keep_freed_memory()
        return args.fn(args) or 0
    except stop.Interrupted as e:
        print(f"stilts: {e}; what it had done is saved: run the same command again to continue",
              file=sys.stderr)
        return stop.EXIT_RESUME
    except StiltsError as e:
        print(f"stilts: error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print("stilts: error: out of memory; lower train.batch_size and raise train.grad_accum "
              "(same effective batch)", file=sys.stderr)
        return 3
    except Exception as e:  # noqa: BLE001
        from stilts.io import disk_full

        if disk_full(e):  # a write not named by stilts.io.writing (the MLflow store itself, say)
            print(f"stilts: error: no space left on device ({str(e).splitlines()[0][:300]}); free some space and "
                  "run the same command again", file=sys.stderr)
            return 2
        if type(e).__name__ == "OutOfMemoryError":
            print(f"stilts: error: out of memory ({e}); lower train.batch_size and raise train.grad_accum "
                  "(same effective batch)", file=sys.stderr)
            return 3
        raise


if __name__ == "__main__":
    raise SystemExit(main())
