"""Bad input through the CLI: one line naming the file/line/key, a non-zero exit, nothing written."""

import json

import pytest
import yaml

from stilts import cli, data, modeling
from stilts.errors import StiltsError
from stilts.tasks import registry


def run_cli(capsys, *argv):
    code = cli.main([*argv])
    err = capsys.readouterr().err.strip()
    return code, err


def test_cli_bad_params_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STILTS_WORKER", "0")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"batchsize": 8}}))
    code, err = run_cli(capsys, "--params", str(tmp_path / "params.yaml"), "prepare", "--task", "syn_rte")
    assert code == 2 and len(err.splitlines()) == 1
    assert err.endswith("unknown key 'train.batchsize' (did you mean 'train.batch_size'?)")
    assert not (tmp_path / "data").exists()


def test_cli_unknown_task_suggests(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STILTS_WORKER", "0")
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(capsys, "--params", str(tmp_path / "none.yaml"), "generate", "--task", "syn_copaa",
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
