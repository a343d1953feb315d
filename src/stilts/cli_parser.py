"""The `stilts` command line: every command's arguments (cli.py runs them)."""

from __future__ import annotations

import argparse


def _cluster_arguments(sp) -> None:
    sp.add_argument("--cluster", metavar="local|tcp://HOST:PORT|slurm",
                    help="run the stages as Dask tasks: a local cluster on 127.0.0.1, a running scheduler, "
                         "or SLURM jobs (dask-jobqueue); default: `dvc repro`, one stage at a time")
    sp.add_argument("--jobs", type=int, default=1, help="local: CPU workers (cells at once); slurm: batch jobs")
    sp.add_argument("--devices", help="local: GPU ids, one worker each (e.g. 0,1,2,3)")
    sp.add_argument("--cells-per-gpu", type=int, default=1, metavar="K",
                    help="cells sharing one GPU (each asks for GPU=1/K)")
    sp.add_argument("--tracking-uri", help="the MLflow server every cell logs to and the analysis reads "
                    "(default: $MLFLOW_TRACKING_URI, else mlflow.db in the project)")
    sp.add_argument("--dashboard", nargs="?", const="127.0.0.1:8787", metavar="HOST:PORT",
                    help="serve the Dask dashboard (needs bokeh; default address 127.0.0.1:8787)")


def _select_arguments(sp) -> None:
    sp.add_argument("--target", help="the target task (default: select.target)")
    sp.add_argument("--budget", type=int, help="training runs to spend at most, intermediate runs and the baseline "
                    "included (default: select.budget, 6)")
    sp.add_argument("--candidates", help="comma-separated candidates (default: rank.candidates, else "
                    "tasks.intermediate, else the prior grids' intermediate tasks); those without data are skipped")
    sp.add_argument("--prior-experiment", metavar="E1[,E2]", help="the grids the prior learns from (as for rank)")
    sp.add_argument("--confident", type=float, help="stop when P(the leading arm is the best) reaches this "
                    "(default: select.confident, 0.95)")
    sp.add_argument("--hopeless", type=float, help="stop when, after the baseline, no candidate's P(beats the "
                    "baseline) reaches this (default: select.hopeless, 0.05)")
    sp.add_argument("--seed", type=int, help="of the draws behind P(best) and the plans (default: select.seed)")
    sp.add_argument("--study", metavar="PARAMS.yaml", help="the study file the selection writes and runs "
                    "(default: select-<target>.yaml)")
    _cluster_arguments(sp)


def _rank_arguments(sp) -> None:
    sp.add_argument("--targets", help="comma-separated target tasks (default: rank.targets)")
    sp.add_argument("--candidates", help="comma-separated candidates (default: rank.candidates, else "
                    "tasks.intermediate)")
    sp.add_argument("--method", help="prior, semb, logme, hybrid, comma-separated (default: rank.methods)")
    sp.add_argument("--prior-experiment", metavar="E1[,E2]", help="measured grids (MLflow experiments: studies or "
                    "import-results; or grids of the catalogue, `stilts grids`) that prior and hybrid learn from "
                    "(default: rank.prior_experiments, else every grid of the catalogue that is here)")
    sp.add_argument("--experiment",
                    help="score against this experiment's transfer results (default: mlflow.experiment)")
    sp.add_argument("--sample-size", type=int, help="training examples per task (default: rank.sample_size)")
    sp.add_argument("--write-study", metavar="PARAMS.yaml", help="write the study that tests the ranking: the top "
                    "--top candidates with data here and the baseline on the target, --restarts each")
    sp.add_argument("--top", type=int, default=2, help="candidates in the written study (default: 2)")
    sp.add_argument("--restarts", type=int, default=1, help="restarts in the written study (default: 1)")


def _grids_arguments(sp) -> None:
    grids_sub = sp.add_subparsers(dest="grids_command")
    fp = grids_sub.add_parser("fetch", help="fetch a grid's repository at its pinned commit, verify it and cache it")
    fp.add_argument("name", help="a fetchable source (e.g. taskweb) or one of its grids")
    fp.add_argument("--from", dest="from_path", metavar="PATH", help="read it from a local clone or mirror of the "
                    "repository, an unpacked archive or the archive file, instead of downloading it")


def build(handlers: dict) -> argparse.ArgumentParser:
    """The parser of every command; `handlers`: command name → the function that runs it."""
    p = argparse.ArgumentParser(prog="stilts", description="Intermediate-task transfer learning studies.")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a params value, e.g. --set train.lr=1e-5 (repeatable)")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, help_):
        sp = sub.add_parser(name, help=help_)
        sp.set_defaults(fn=handlers[name])
        return sp

    sp = add("tasks", "list registered tasks: type, metric, roles, source files, whether data is present")
    sp.add_argument("--role", choices=("intermediate", "target", "probe"), help="only tasks the paper uses so")
    sp = add("prepare", "read official files (or generate) → data/processed/<task>/")
    sp.add_argument("--task", action="append", help="task name (repeatable; default: every task in params)")
    sp = add("sweep", "sweep the grid in params (sweep.grid) for one task, from the pretrained encoder")
    sp.add_argument("--task", required=True)
    sp = add("intermediate", "train one intermediate task from the pretrained encoder")
    sp.add_argument("--task", required=True)
    sp.add_argument("--restart", type=int, default=0)
    sp.add_argument("--size", type=int, help="train on the first N examples only (RQ4 data-size sweep)")
    sp = add("transfer", "fine-tune a target/probe task from an intermediate checkpoint")
    sp.add_argument("--source", required=True, help="intermediate task, or 'none' for the baseline")
    sp.add_argument("--task", required=True)
    sp.add_argument("--restart", type=int, default=0)
    sp = add("analyze", "query MLflow and write reports/ (another experiment: reports/<experiment>/)")
    sp.add_argument("--experiment", help="MLflow experiment (default: mlflow.experiment), or a shipped grid "
                    "(`stilts grids`), imported on first use")
    sp.add_argument("--compare", action="append", metavar="GRID", help="set another grid beside it (an experiment "
                    "or a shipped grid, e.g. paper-2020): the cells both measured and how their effects rank")
    sp = add("import-results", "log published results (CSV) as MLflow runs")
    sp.add_argument("file")
    sp.add_argument("--experiment", required=True)
    sp = add("export-results", "write a study's per-run results (CSV, import-results format) and their provenance "
             "(YAML beside it)")
    sp.add_argument("file")
    sp.add_argument("--experiment", help="default: mlflow.experiment")
    sp.add_argument("--name", help="the grid's name in its provenance (default: the experiment's)")
    sp.add_argument("--command", dest="command_line", default="stilts study", help="how the study was run")
    sp = add("plan", "print the grid, its tokens and FLOPs, and estimated time / GPU-hours")
    sp.add_argument("--gpu", default="A100", help="GPU class for the GPU-hour estimate (A100, H100, V100, ...)")
    sp.add_argument("--mfu", type=float, default=None, help="assume this fraction of the GPU's dense bf16 peak "
                    "(default: stilts' measured efficiency, src/stilts/gpu_calibration.csv)")
    sp.add_argument("--no-calibrate", action="store_true", help="skip the measured calibration on this machine")
    sp = add("rank", "rank candidate intermediate tasks per target (prior, semb, logme, hybrid); score "
             "against a grid")
    _rank_arguments(sp)
    _grids_arguments(add("grids", "list the published transfer grids stilts knows: encoder, method, size, licence, "
                         "citation, and whether each is shipped, fetched or absent here"))
    sp = add("pipeline", "write dvc.yaml for the study in params")
    sp.add_argument("--check", action="store_true", help="fail if dvc.yaml is out of date")
    add("settings", "resolve each task's settings from params into data/settings/ (the first DVC stage)")
    sp = add("generate", "write one generated task in its official format")
    sp.add_argument("--task", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--train", type=int)
    sp.add_argument("--validation", type=int)
    sp.add_argument("--seed", type=int)
    sp = add("server", "serve one MLflow store to every cell and worker (loopback by default)")
    sp.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    sp.add_argument("--port", type=int, default=5000)
    sp.add_argument("--backend-store-uri", help="sqlite:///PATH or any SQLAlchemy URL, e.g. "
                    "postgresql://USER@HOST/DB (default: sqlite:///mlflow.db in the project)")
    sp.add_argument("--artifacts-destination", help="where the server keeps artifacts it serves "
                    "(default: mlartifacts/ in the project; or s3://..., gs://...)")
    sp.add_argument("--workers", type=int, help="server processes (default: one per 4 cores, 1 to 4)")
    sp.add_argument("--open", action="store_true", help="open the study's training runs in a browser")
    sp = add("study", "write dvc.yaml and run the out-of-date stages: `dvc repro`, or on a Dask cluster")
    _cluster_arguments(sp)
    sp = add("select", "train the cells that answer 'which intermediate task for this target?' one at "
             "a time, each chosen from what was measured, within a budget of training runs")
    _select_arguments(sp)
    return p
