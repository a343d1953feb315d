"""Bad input through the CLI: one line naming the file/line/key, a non-zero exit, nothing written."""

import json
from pathlib import Path

import pytest
import yaml

from stilts import cli, data, modeling
from stilts.errors import StiltsError
from stilts.tasks import registry
from tests.commands import run_cli


def test_cli_bad_params_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STILTS_WORKER", "0")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"batchsize": 8}}))
    code, _, err = run_cli(capsys, "--params", str(tmp_path / "params.yaml"), "prepare", "--task", "syn_rte")
    assert code == 2 and len(err.splitlines()) == 1
    assert err.endswith("unknown key 'train.batchsize' (did you mean 'train.batch_size'?)")
    assert not (tmp_path / "data").exists()


def test_cli_unknown_task_suggests(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STILTS_WORKER", "0")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "--params", str(tmp_path / "none.yaml"), "generate", "--task", "syn_copaa",
                        "--out", str(tmp_path / "x"))
    assert code == 2 and "unknown task 'syn_copaa' (did you mean 'syn_copa'?)" in err


def write(root, task, files):
    d = root / "data" / "raw" / task
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


def test_malformed_tsv_row(make_params):
    params = make_params()
    write(params.root, "mrpc", {"train.tsv": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t2\t3\n",
                                "dev.tsv": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t2\t3\ta\tb\n"})
    with pytest.raises(StiltsError, match=r"mrpc/train.tsv:2: expected 5 tab-separated columns, got 3"):
        data.prepare(params, "mrpc")


def test_malformed_csv_row(make_params):
    params = make_params()
    header = "id,context,question,answer0,answer1,answer2,answer3,label\n"
    write(params.root, "cosmosqa", {"train.csv": header + "a,b,c,d,e,f,g,1,EXTRA\n", "valid.csv": header})
    with pytest.raises(StiltsError, match=r"cosmosqa/train.csv:2: more columns than the header"):
        data.prepare(params, "cosmosqa")


def test_malformed_senteval_line(make_params):
    params = make_params(tasks={"probe": ["syn_tense"]})
    d = params.root / "x"
    d.mkdir()
    (d / "t.txt").write_text("tr\tPAST\tok\nxx PAST broken\n")
    from stilts.readers import read

    with pytest.raises(StiltsError, match=r"t.txt:2: expected 'tr\|va\|te<TAB>label<TAB>sentence'"):
        list(read("senteval", d / "t.txt", "train"))


def test_multiple_choice_label_outside_choices(make_params):
    params = make_params()
    row = {"premise": "p", "choice1": "a", "choice2": "b", "question": "cause", "label": 2}
    write(params.root, "copa", {"train.jsonl": json.dumps(row) + "\n", "val.jsonl": json.dumps(row) + "\n"})
    with pytest.raises(StiltsError, match=r"copa/train.jsonl:1: label '2' is outside the 2 choices"):
        data.prepare(params, "copa")


def test_checkpoint_from_another_base_model(make_params, tmp_path):
    params = make_params()
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "stilts.json").write_text(json.dumps({"base_model": "roberta-large"}))
    with pytest.raises(StiltsError, match="checkpoint was trained from 'roberta-large'"):
        modeling.check_compatible(ckpt, params)
    with pytest.raises(StiltsError, match="not a stilts checkpoint"):
        modeling.check_compatible(tmp_path, params)


def test_unprepared_task(make_params):
    params = make_params()
    tok = modeling.load_tokenizer(params.model)
    with pytest.raises(StiltsError, match="not prepared yet; run `stilts prepare --task syn_rte`"):
        data.features(params, "syn_rte", "train", tok, 32)
    assert registry.get("syn_rte")


def test_out_of_memory_suggests_the_fix(capsys, monkeypatch):
    import torch

    from stilts import cells

    monkeypatch.setenv("STILTS_WORKER", "0")

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(cells, "transfer", oom)
    monkeypatch.setattr("stilts.cli._params", lambda args: None)
    code = cli.main(["transfer", "--source", "none", "--task", "syn_rte"])
    err = capsys.readouterr().err
    assert code == 3 and "lower train.batch_size and raise train.grad_accum" in err


def _cli_in(root, monkeypatch, capsys, *argv):
    monkeypatch.setenv("STILTS_WORKER", "0")
    monkeypatch.chdir(root)
    code, _, err = run_cli(capsys, *argv)
    return code, err


def _files(root) -> set:
    return {p.relative_to(root) for p in root.rglob("*")}


def test_negative_restart_is_one_line(make_params, monkeypatch, capsys):
    params = make_params()
    data.prepare(params, "syn_rte")
    before = _files(params.root)
    for cmd in (["transfer", "--source", "none", "--task", "syn_rte"], ["intermediate", "--task", "syn_nli"]):
        code, err = _cli_in(params.root, monkeypatch, capsys, *cmd, "--restart", "-3")
        assert code == 2 and err == "stilts: error: --restart must be ≥ 0, got -3"
    assert _files(params.root) == before  # no MLflow store, no features, no results


def test_binary_garbage_data_file_is_one_line(make_params, monkeypatch, capsys):
    import gzip
    import random

    params = make_params()
    garbage = bytes([0x89, 0x50, 0x4E, 0x47]) + random.Random(0).randbytes(5000)
    write(params.root, "rte", {})
    (params.root / "data" / "raw" / "rte" / "train.jsonl").write_bytes(garbage)
    (params.root / "data" / "raw" / "rte" / "val.jsonl").write_bytes(garbage)
    code, err = _cli_in(params.root, monkeypatch, capsys, "prepare", "--task", "rte")
    assert code == 2 and len(err.splitlines()) == 1
    assert err.endswith("rte/train.jsonl: not UTF-8 text (a binary or compressed file?)")
    assert not (params.root / "data" / "processed").exists()
    # a gzip suffix on bytes that are not gzip, and a truncated gzip stream
    qasrl = params.root / "data" / "raw" / "qasrl" / "qasrl-v2" / "orig"
    qasrl.mkdir(parents=True)
    (qasrl / "train.jsonl.gz").write_bytes(garbage)
    (qasrl / "dev.jsonl.gz").write_bytes(gzip.compress(b'{"a": 1}\n' * 1000)[:200])
    code, err = _cli_in(params.root, monkeypatch, capsys, "prepare", "--task", "qasrl")
    assert code == 2 and len(err.splitlines()) == 1 and "train.jsonl.gz: not a readable gzip file" in err


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n", "tasks: {}\n"])
def test_empty_params_plans_nothing_and_says_so(tmp_path, monkeypatch, capsys, text):
    (tmp_path / "params.yaml").write_text(text)
    for cmd in (["pipeline"], ["prepare"], ["plan", "--no-calibrate"]):
        code, err = _cli_in(tmp_path, monkeypatch, capsys, *cmd)
        assert code == 2 and len(err.splitlines()) == 1, (cmd, err)
        assert err.startswith("stilts: error: params.yaml: ") and ("empty" in err or "no task" in err)
    assert _files(tmp_path) == {Path("params.yaml")}
