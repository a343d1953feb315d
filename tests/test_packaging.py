"""The lock pins every dependency the package declares; conda.yaml installs exactly the lock."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_every_declared_dependency_is_pinned():
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = lock()
    for dep in deps:
        name = re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[ ]", dep)[0]).lower()
        assert name in pins, f"{name} is not pinned in requirements.lock"
    assert pins["torch"] == "2.13.0"  # the CPU wheel on disk; a GPU user installs their own first


def test_conda_env_installs_the_lock():
    env = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    assert "-r requirements.lock" in pip


def test_mlproject_entry_points():
    spec = yaml.safe_load((ROOT / "MLproject").read_text())
    assert spec["conda_env"] == "conda.yaml"
    assert {"main", "prepare", "sweep", "intermediate", "transfer", "analyze"} <= set(spec["entry_points"])
    for name, entry in spec["entry_points"].items():  # mlflow shell-quotes every value itself
        assert "'{" not in entry["command"] and '"{' not in entry["command"], name


def test_mlproject_adapter_builds_cli_args():
    from stilts.mlproject import to_cli

    args = to_cli(["transfer", "--source", "syn_nli", "--task", "syn_rte", "--restart", "1.0", "--lr", "3e-5",
                   "--overrides", "train.epochs=3"])
    assert args == ["--set", "train.epochs=3", "--set", "task_overrides.syn_rte.lr=3e-05", "transfer", "--task",
                    "syn_rte", "--restart", "1", "--source", "syn_nli"]
    assert to_cli(["sweep", "--task", "wic", "--overrides", "train.lr=1e-5 sweep.enabled=true 'train.seed=2'"]) == \
        ["--set", "train.lr=1e-5", "--set", "sweep.enabled=true", "--set", "train.seed=2", "sweep", "--task", "wic"]


def test_builtin_task_files_ship_as_package_data():
    import fnmatch

    import tomllib

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["stilts"]
    files = sorted((ROOT / "src/stilts/tasks/builtin").iterdir())
    names = [p.relative_to(ROOT / "src/stilts").as_posix() for p in files if p.name != "__pycache__"]
    assert names and all(any(fnmatch.fnmatch(n, g) for g in globs) for n in names), names
