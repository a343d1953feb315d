""".ci/reproduced.py, run by CI after `make run`: the committed reports byte for byte where the CPU is of the
kind recorded in the committed reports/provenance.json, how they differ elsewhere; and the analysis that
records the kind and the commit apart from the reports whose bytes must not change."""

import importlib.util
import json
from pathlib import Path

import pytest

from stilts.analysis import provenance
from tests.commands import git

CHECK = Path(__file__).resolve().parents[1] / ".ci" / "reproduced.py"
spec = importlib.util.spec_from_file_location("reproduced", CHECK)
reproduced = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reproduced)


def committed_study(root: Path, kind: dict | None) -> Path:
    """A checkout whose committed reports were made on a CPU of `kind` (None: no record, an older commit)."""
    (root / "reports").mkdir(parents=True)
    (root / "reports" / "summary.json").write_text('{"runs": 28}\n')
    (root / "reports" / "transfer_heatmap.png").write_bytes(b"\x89PNG one")
    if kind is not None:
        (root / "reports" / provenance.FILE).write_text(provenance.text({"cpu": kind, "commit": "a" * 40}))
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "reports")
    return root


def other_kind() -> dict:
    return {**provenance.cpu(), "model": "Another CPU"}


def check(root: Path, capsys) -> tuple[int, str]:
    code = reproduced.main([str(root)])
    return code, capsys.readouterr().out


def test_the_same_reports_on_the_same_cpu_kind_pass(tmp_path, capsys):
    root = committed_study(tmp_path, provenance.cpu())
    (root / "reports" / provenance.FILE).write_text(provenance.text({"cpu": provenance.cpu(), "commit": "b" * 40}))
    code, out = check(root, capsys)  # the commit recorded changed, as it does with every commit
    assert code == 0 and out.startswith("reproduced: 2 committed report files byte for byte")


def test_other_reports_on_the_same_cpu_kind_fail_and_show_the_difference(tmp_path, capsys):
    root = committed_study(tmp_path, provenance.cpu())
    (root / "reports" / "summary.json").write_text('{"runs": 27}\n')
    code, out = check(root, capsys)
    assert code == 1 and out.startswith("NOT reproduced") and "reports/summary.json" in out and '"runs": 27' in out


@pytest.mark.parametrize("kind", [other_kind(), None], ids=["another kind", "not recorded"])
def test_other_reports_on_another_cpu_kind_are_shown_and_pass(tmp_path, capsys, kind):
    root = committed_study(tmp_path, kind)
    (root / "reports" / "transfer_heatmap.png").write_bytes(b"\x89PNG two")
    code, out = check(root, capsys)
    assert code == 0 and "not compared byte for byte" in out and "reports/transfer_heatmap.png" in out
    assert (provenance.describe(kind) if kind else "a CPU not recorded") in out


def test_the_analysis_records_the_cpu_kind_and_commit_apart(tmp_path):
    from stilts import config
    from stilts.analysis import report
    from stilts.analysis.imports import import_results

    (tmp_path / "r.csv").write_text("restart,source,task,role,score\n0,none,rte,target,0.6\n0,mnli,rte,target,0.8\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "study")
    head = git(tmp_path, "rev-parse", "HEAD").stdout.strip()
    params = config.Params(root=tmp_path)  # its runs in tmp_path/mlflow.db
    import_results(params, tmp_path / "r.csv", "published")
    out = report.run(params, "published")
    assert json.loads((out / provenance.FILE).read_text()) == {"cpu": provenance.cpu(), "commit": head}
    assert f"Made on {provenance.describe(provenance.cpu())} by stilts commit {head[:12]}." in \
        (out / "report.md").read_text()
    summary = (out / "summary.json").read_text()
    assert head not in summary and provenance.cpu()["model"] not in summary
