"""A full disk part-way through rewriting an output: the earlier good version stays byte for byte, no
temporary is left beside it, and the error is one line naming the output.

For the two ways stilts writes (`stilts.io.atomic_write_bytes` for a file, `stilts.io.atomic_dir` for a
folder), with the fault in the middle of a write, at the fsync and at the rename, and for the outputs written
through them or on their own: settings files, dvc.yaml files, dvc.lock entries, prepared data, generated
task files, reports. Checkpoints, resume states, results and feature caches: tests/test_disk_faults.py."""

import os
from pathlib import Path

import pytest
import yaml

from stilts import io
from stilts.errors import StiltsError
from tests import disk_full


def under(folder: Path):
    return lambda path: path.startswith(str(folder) + os.sep)


def rewrite_fails(folder: Path, rewrite, named: Path) -> None:
    """`rewrite()` fails for a full disk, in one line naming `named`, and leaves `folder` as it was."""
    before = disk_full.snapshot(folder)
    with pytest.raises(StiltsError) as e:
        rewrite()
    assert str(named) in str(e.value) and "no space left on device" in str(e.value) and "\n" not in str(e.value)
    assert disk_full.snapshot(folder) == before


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_file_rewritten_on_a_full_disk_stays_as_it_was(tmp_path, monkeypatch, where):
    target = tmp_path / "out" / "r0.json"
    io.atomic_write_bytes(target, b'{"score": 0.5}\n')
    if where == "write":
        disk_full.python_writes(monkeypatch, under(target.parent))
    else:  # every byte written, the space is found missing when they go to disk (delayed allocation, NFS)
        monkeypatch.setattr(io.os, "fsync", disk_full.enospc)
    rewrite_fails(target.parent, lambda: io.atomic_write_bytes(target, b'{"score": 0.75, "more": 1}\n' * 500),
                  target)
    assert target.read_bytes() == b'{"score": 0.5}\n'


def make_folder(path: Path, text: str) -> None:
    with io.atomic_dir(path) as tmp:
        (tmp / "a.txt").write_text(text)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.bin").write_bytes(text.encode() * 100)


def test_a_folder_rewritten_on_a_full_disk_stays_as_it_was(tmp_path, monkeypatch):
    folder = tmp_path / "state" / "cell"
    make_folder(folder, "first")
    disk_full.python_writes(monkeypatch, lambda p: p.endswith("b.bin"))  # its second file, half written
    rewrite_fails(folder.parent, lambda: make_folder(folder, "second, longer"), folder)
    assert (folder / "a.txt").read_text() == "first"


def test_a_folder_whose_swap_fails_is_put_back(tmp_path, monkeypatch):
    folder = tmp_path / "state" / "cell"
    make_folder(folder, "first")
    real, calls = os.replace, []

    def replace(src, dst):  # the old folder moved aside, then no room for the new one's entry
        calls.append(dst)
        if len(calls) == 2:
            disk_full.enospc()
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", replace)
    rewrite_fails(folder.parent, lambda: make_folder(folder, "second"), folder)


def test_a_folder_a_kill_left_moved_aside_is_put_back(tmp_path):
    folder = tmp_path / "state" / "cell"
    make_folder(folder, "first")
    before = disk_full.snapshot(folder)
    aside = folder.with_name(f".{folder.name}.old-4242")
    os.replace(folder, aside)  # killed between moving the old one aside and moving the new one in
    make_folder(folder.with_name(f".{folder.name}.x1.tmp"), "second")
    io.remove_partial(folder)
    assert disk_full.snapshot(folder) == before and [p.name for p in folder.parent.iterdir()] == [folder.name]


def test_settings_and_dvc_yaml_files_rewritten_on_a_full_disk(make_params, tmp_path, monkeypatch):
    from stilts import pipeline, settings

    params = make_params()
    settings.write(params), pipeline.write(params)
    params = make_params(study={"restarts": 2}, train={"lr": 2e-3})
    disk_full.python_writes(monkeypatch, under(tmp_path / "data" / "settings"))
    rewrite_fails(tmp_path, lambda: settings.write(params), tmp_path / "data" / "settings")
    monkeypatch.undo()
    disk_full.python_writes(monkeypatch, lambda p: Path(p).name.startswith(".dvc.yaml."))
    rewrite_fails(tmp_path, lambda: pipeline.write(params), tmp_path / "dvc.yaml")


def test_a_dvc_lock_rewritten_on_a_full_disk(tmp_path, monkeypatch):
    from stilts.engine.transport import write_locks

    (tmp_path / "pipelines" / "none").mkdir(parents=True)
    entry = {"cmd": "stilts transfer", "outs": [{"path": "results/none/a/r0.json", "md5": "0" * 32}]}
    write_locks(tmp_path, {"transfer-none-a-r0": ("pipelines/none/dvc.yaml", entry)})
    disk_full.python_writes(monkeypatch, under(tmp_path / "pipelines"))
    rewrite_fails(tmp_path, lambda: write_locks(tmp_path, {"transfer-none-b-r0": ("pipelines/none/dvc.yaml", entry)}),
                  tmp_path / "pipelines" / "none" / "dvc.lock")
    monkeypatch.undo()
    assert list(yaml.safe_load((tmp_path / "pipelines" / "none" / "dvc.lock").read_text())["stages"]) == \
        ["transfer-none-a-r0"]


def test_prepared_data_and_generated_task_files_rewritten_on_a_full_disk(make_params, tmp_path, monkeypatch):
    from stilts import data
    from stilts.generate.suite import write_task

    data.prepare(make_params(), "syn_nli")
    params = make_params(data={"generated_train": 80})  # other data: the prepared folder is written again
    processed = tmp_path / "data" / "processed"
    disk_full.python_writes(monkeypatch, lambda p: p.startswith(str(processed)) and "train.jsonl" in p)
    rewrite_fails(processed, lambda: data.prepare(params, "syn_nli"), processed / "syn_nli")
    monkeypatch.undo()
    generated = tmp_path / "generated"
    write_task("syn_sentiment", generated, 20, 10, 0)
    disk_full.python_writes(monkeypatch, under(generated))
    rewrite_fails(generated, lambda: write_task("syn_sentiment", generated, 40, 10, 1), generated / "train.tsv")


def test_reports_rewritten_on_a_full_disk(tmp_path, monkeypatch):
    from stilts import config
    from stilts.analysis import report
    from stilts.analysis.imports import import_results

    params = config.Params(root=tmp_path)  # its runs in tmp_path/mlflow.db
    rows = ["restart,source,task,role,score", "0,none,rte,target,0.6", "1,none,rte,target,0.7",
            "0,mnli,rte,target,0.8", "1,mnli,rte,target,0.9"]
    (tmp_path / "a.csv").write_text("\n".join(rows) + "\n")
    import_results(params, tmp_path / "a.csv", "published")
    out = report.run(params, "published")
    (tmp_path / "b.csv").write_text("\n".join([rows[0], "0,sst2,rte,target,0.5", "1,sst2,rte,target,0.55"]) + "\n")
    import_results(params, tmp_path / "b.csv", "published")  # the next analysis has other tables
    disk_full.python_writes(monkeypatch, lambda p: p.startswith(str(out)) and p.endswith("summary.json"))
    rewrite_fails(out, lambda: report.run(params, "published"), out)
