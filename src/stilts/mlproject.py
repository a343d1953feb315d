"""MLproject entry points → the `stilts` CLI. Typed `-P` parameters become params overrides."""

from __future__ import annotations

import argparse
import shlex

from stilts import cli


def to_cli(argv: list[str] | None = None) -> list[str]:
    p = argparse.ArgumentParser(prog="python -m stilts.mlproject")
    p.add_argument("command")
    p.add_argument("--task")
    p.add_argument("--source")
    p.add_argument("--restart", default="0")
    p.add_argument("--lr", default="")
    p.add_argument("--experiment", default="")
    p.add_argument("--overrides", default="")
    a = p.parse_args(argv)
    sets = [s for s in shlex.split(a.overrides or "")]
    if a.lr:
        sets.append(f"task_overrides.{a.task}.lr={float(a.lr)!r}")
    args = [x for s in sets for x in ("--set", s)] + [a.command]
    if a.command in ("prepare", "intermediate", "transfer"):
        args += ["--task", a.task]
    if a.command in ("intermediate", "transfer"):
        args += ["--restart", str(int(float(a.restart)))]
    if a.command == "transfer":
        args += ["--source", a.source]
    if a.command == "analyze" and a.experiment:
        args += ["--experiment", a.experiment]
    return args


def main(argv: list[str] | None = None) -> int:
    return cli.main(to_cli(argv))


if __name__ == "__main__":
    raise SystemExit(main())
