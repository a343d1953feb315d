"""What a `dvc` or a cell killed mid-write leaves behind: a dvc.lock cut short (DVC rewrites it in place) is put
back from the last good copy before the next dvc command; a checkpoint's half-written folder is removed."""

import fcntl
from pathlib import Path

import yaml

from stilts import stages
from stilts.io import remove_partial
from tests.commands import run

LOCK = {"schema": "2.0", "stages": {"prepare-syn_nli": {"cmd": "stilts prepare --task syn_nli"}}}


def dvc_project(root: Path) -> Path:
    root.mkdir()
    run(root, "dvc", "init", "-q", "--no-scm")
    (root / ".dvc" / "tmp").mkdir(exist_ok=True)
    (root / ".dvc" / "tmp" / "lock").touch()
    (root / "pipelines" / "none").mkdir(parents=True)
    for lock in ("dvc.lock", "pipelines/none/dvc.lock"):
        (root / lock).write_text(yaml.safe_dump(LOCK))
    return root


def test_a_dvc_lock_left_empty_is_put_back_from_the_last_good_copy(tmp_path, capsys):
    root = dvc_project(tmp_path / "p")
    stages.keep_lock_files(root)  # before a dvc command: the good ones are copied
    (root / "pipelines" / "none" / "dvc.lock").write_text("")  # a dvc killed while writing it
    (root / "dvc.lock").write_text("schema: '2.0'\nstages:\n  prepare-syn_nli:\n    cmd: [")  # cut short
    stages.keep_lock_files(root)
    for lock in ("dvc.lock", "pipelines/none/dvc.lock"):
        assert yaml.safe_load((root / lock).read_text()) == LOCK
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "pipelines/none/dvc.lock: left empty by a dvc command that was killed" in err[1]
    assert "dvc.lock: left cut short or damaged" in err[0]


def test_a_dvc_lock_cut_just_after_a_stage_name_is_put_back(tmp_path, capsys):
    """Valid YAML, but not a lock file DVC reads: its last stage has no entry (a cut at a buffer's end)."""
    root = dvc_project(tmp_path / "p")
    stages.keep_lock_files(root)
    good = (root / "dvc.lock").read_text()
    (root / "dvc.lock").write_text(good + "  transfer-syn_nli-syn_copa-r1:\n")
    stages.keep_lock_files(root)
    assert (root / "dvc.lock").read_text() == good
    assert "dvc.lock: left cut short or damaged" in capsys.readouterr().err
    (root / "dvc.lock").write_text(good + "  sweep-syn_nli:\n    cmd: stilts sweep --task syn_nli\n    deps:\n    - pa")
    stages.keep_lock_files(root)
    assert (root / "dvc.lock").read_text() == good


def test_without_a_copy_it_is_removed_and_while_dvc_works_nothing_is_touched(tmp_path):
    root = dvc_project(tmp_path / "p")
    (root / "dvc.lock").write_text("")
    with open(root / ".dvc" / "tmp" / "lock", "a") as held:  # a dvc holds the project's lock
        fcntl.flock(held, fcntl.LOCK_EX)
        stages.keep_lock_files(root)
        assert (root / "dvc.lock").read_text() == ""
    stages.keep_lock_files(root)
    assert not (root / "dvc.lock").exists()  # DVC then restores its stages from the run-cache or runs them
    assert (root / "pipelines" / "none" / "dvc.lock").is_file()


def test_dvc_stage_lock_table_left_empty_is_removed_a_good_one_kept(tmp_path, capsys):
    """DVC rewrites .dvc/tmp/rwlock in place too; left empty, every dvc command stops ("JSON ... corrupted")."""
    root = dvc_project(tmp_path / "p")
    rwlock, guard = root / ".dvc" / "tmp" / "rwlock", root / ".dvc" / "tmp" / "rwlock.lock"
    guard.touch()
    good = '{"write": {}, "read": {"data/x": [{"pid": 1, "cmd": "dvc repro"}]}}'
    rwlock.write_text(good)
    stages.mend_rwlock(root)
    assert rwlock.read_text() == good
    rwlock.write_text("")
    with open(guard, "a") as held:  # a dvc is editing it: not touched
        fcntl.flock(held, fcntl.LOCK_EX)
        stages.mend_rwlock(root)
        assert rwlock.exists()
    stages.mend_rwlock(root)
    assert not rwlock.exists()
    assert ".dvc/tmp/rwlock: left damaged by a dvc command that was killed" in capsys.readouterr().err
    rwlock.write_text('{"write": {"x": {"pid": "one"}}}')  # JSON, but not DVC's format
    stages.mend_rwlock(root)
    assert not rwlock.exists()


def test_a_half_written_checkpoint_folder_is_removed_the_complete_one_stays(tmp_path):
    out = tmp_path / "models" / "intermediate" / "syn_nli" / "r0"
    out.mkdir(parents=True)
    (out / "model.safetensors").write_bytes(b"complete")
    (out.parent / ".r0.a73r9_8s.tmp").mkdir()
    (out.parent / ".r0.a73r9_8s.tmp" / "model.safetensors").write_bytes(b"half")
    (out.parent / ".r1.zz.tmp").mkdir()  # another restart's: not this one's to remove
    remove_partial(out)
    assert sorted(p.name for p in out.parent.iterdir()) == [".r1.zz.tmp", "r0"]
    assert (out / "model.safetensors").read_bytes() == b"complete"
