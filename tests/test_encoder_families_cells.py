"""Whole cells of every encoder family through the CLI (in-process): an intermediate checkpoint that reloads
exactly and loads as an MLflow logged model, a transfer from it to a span task; and the one-line errors for
families and attention implementations that cannot work."""

from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import pytest
import yaml

from stilts import cli, config, data, predict, tracking
from tests.conftest import tiny_params_dict
from tests.test_task_formats import FORMATS
from tests.tiny_encoders import FAMILIES

TRAIN = {"mixed_precision": "no", "max_steps": 4, "batch_size": 4, "eval_batch_size": 16, "eval_every": 2,
         "max_seq_length": 128, "lr": 1e-3}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """fp32 cells in this process (the pyfunc predicts in fp32), one MLflow store for every family's project."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STILTS_WORKER", "0")
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}")
        yield
    AcceleratorState._reset_state()


def _project(root, model_path, family: str, **over):
    (root / "raw" / "wic").mkdir(parents=True, exist_ok=True)
    FORMATS["wic"](root / "raw" / "wic")
    raw = tiny_params_dict(model_path, train=TRAIN, mlflow={"experiment": f"family-{family}"}, **over)
    raw["data"] = {**raw["data"], "raw_dir": str(root / "raw"), "generated_train": 24, "generated_validation": 12}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return root / "params.yaml"


def stilts(params_file, *args) -> int:
    return cli.main(["--params", str(params_file), *args])


@pytest.fixture(scope="module")
def cells(env, tiny_family, tmp_path_factory):
    """`cells(family)` → (params, intermediate summary, transfer summary): `stilts prepare`, `stilts intermediate
    --task syn_nli` and `stilts transfer --source syn_nli --task wic` in the family's own project (run once)."""
    done = {}

    def run(family: str):
        if family not in done:
            path = _project(tmp_path_factory.mktemp(family), tiny_family(family), family)
            assert stilts(path, "prepare", "--task", "syn_nli", "--task", "wic") == 0
            assert stilts(path, "intermediate", "--task", "syn_nli") == 0
            assert stilts(path, "transfer", "--source", "syn_nli", "--task", "wic") == 0
            params = config.load(path)
            inter = json.loads((params.root / "models/intermediate/syn_nli/r0/stilts.json").read_text())
            target = json.loads((params.root / "results/syn_nli/wic/r0.json").read_text())
            done[family] = params, inter, target
        return done[family]

    return run


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_reloads_to_the_scores_it_was_saved_with(cells, family):
    """The checkpoint (encoder, its tokenizer, head) predicts the dev set as the run scored it, and its tokenizer
    encodes as the one it was trained with."""
    from transformers import AutoTokenizer

    params, inter, _ = cells(family)
    ckpt = params.root / "models/intermediate/syn_nli/r0"
    records = data.load_records(params, "syn_nli", "validation")
    out = predict.load(ckpt).predict(records)
    assert np.mean([p == r["label"] for p, r in zip(out["prediction"], records)]) == pytest.approx(inter["score"])
    texts = [r["text_a"] for r in records], [r["text_b"] for r in records]
    original, saved = AutoTokenizer.from_pretrained(params.model.name), AutoTokenizer.from_pretrained(ckpt)
    assert saved(*texts)["input_ids"] == original(*texts)["input_ids"]
    meta = json.loads((ckpt / "stilts.json").read_text())
    assert meta["base_model"] == params.model.name and meta["steps"] == 4


@pytest.mark.parametrize("family", FAMILIES)
def test_logged_model_predicts_like_the_checkpoint(cells, family):
    import mlflow

    params, inter, _ = cells(family)
    run = mlflow.get_run(inter["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["runtime.attn_implementation"] == "eager"
    records = data.load_records(params, "syn_nli", "validation")
    direct = predict.load(params.root / "models/intermediate/syn_nli/r0").predict(records)
    logged = mlflow.pyfunc.load_model(f"models:/{run.data.tags['stilts.model_id']}").predict(records)
    assert logged["logits"].tolist() == direct["logits"].tolist()
    assert list(logged["prediction"]) == list(direct["prediction"])


@pytest.mark.parametrize("family", FAMILIES)
def test_transfer_from_the_checkpoint_to_a_span_task(cells, family):
    import mlflow

    params, inter, target = cells(family)
    assert target["source"] == "syn_nli" and target["steps"] == 4 and np.isfinite(target["score"])
    run = mlflow.get_run(target["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["cell.init_from"].endswith("models/intermediate/syn_nli/r0")
    assert tracking.run_status(params, inter["mlflow_run_id"]) == "FINISHED"


def _config_only(folder, kind: str):
    """A model folder holding only the config of a family (the check reads nothing else)."""
    from transformers import GPT2Config, T5Config, XLNetConfig

    folder.mkdir()
    configs = {"gpt2": lambda: GPT2Config(n_layer=1, n_embd=32, n_head=2), "t5": lambda: T5Config(num_layers=1),
               "xlnet": lambda: XLNetConfig(n_layer=1, d_model=32, n_head=2)}
    if kind in configs:
        configs[kind]().save_pretrained(folder)
    else:
        (folder / "config.json").write_text(json.dumps({"model_type": kind, "hidden_size": 32}))
    return folder


@pytest.mark.parametrize("kind, reason", [
    ("gpt2", r"is a model of the gpt2 family, not a bidirectional \(masked-LM\) encoder"),
    ("xlnet", r"is a model of the xlnet family, not a bidirectional \(masked-LM\) encoder"),
    ("t5", "is a model of the t5 family, an encoder-decoder"),
    ("futurebert", "with transformers .*model type `futurebert` but Transformers does not recognize"),
])
def test_a_family_that_cannot_work_is_one_line_at_load(env, tmp_path, capsys, kind, reason):
    path = _project(tmp_path / "project", _config_only(tmp_path / kind, kind), kind)
    assert stilts(path, "intermediate", "--task", "syn_nli") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("stilts: error: model.name: ")
    assert re.search(reason, err), err
    assert not (tmp_path / "project" / "models").exists()


@pytest.mark.parametrize("family, attn, reason", [
    ("deberta-v3", "sdpa", r"model.attn_implementation: 'sdpa' is not available for deberta-v2 models"),
    ("modernbert", "flash_attention_2", r"'flash_attention_2' needs its flash-attn package and a supported GPU"),
])
def test_an_attention_the_family_lacks_is_one_line_at_load(env, tiny_family, tmp_path, capsys, family, attn, reason):
    path = _project(tmp_path, tiny_family(family), family, model={"attn_implementation": attn})
    assert stilts(path, "prepare", "--task", "syn_nli") == 0
    capsys.readouterr()
    assert stilts(path, "intermediate", "--task", "syn_nli") == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "%|" not in line]  # not progress bars
    assert len(err) == 1 and err[0].startswith("stilts: error: ") and re.search(reason, err[0]), err
    assert not (tmp_path / "models").exists()


def test_a_sentencepiece_model_without_its_package_is_one_line_at_load(env, tiny_family, tmp_path, capsys):
    """DeBERTa-v3 as released holds its tokenizer only as a SentencePiece model (spm.model, no tokenizer.json);
    transformers converts it with the sentencepiece package, and without it stilts says so."""
    import shutil

    if importlib.util.find_spec("sentencepiece"):
        pytest.skip("sentencepiece is installed: the model file would be converted")
    model = tmp_path / "deberta-v3-spm"
    model.mkdir()
    shutil.copy2(tiny_family("deberta-v3") / "config.json", model)
    (model / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "DebertaV2Tokenizer"}))
    (model / "spm.model").write_bytes(b"\x0a\x03abc")  # never parsed without the package
    path = _project(tmp_path / "project", model, "deberta-v3")
    assert stilts(path, "intermediate", "--task", "syn_nli") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(deberta-v2); a tokenizer saved only as a SentencePiece model" in err[0]
    assert "`pip install sentencepiece`" in err[0]
