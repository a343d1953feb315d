"""Each official format: a few rows written here, prepared, with errors naming file and line."""

import json

import pytest

from stilts import data
from stilts.errors import StiltsError


def write(root, task, files: dict):
    d = root / "data" / "raw" / task
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)
    return d


def jl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


RTE = [{"premise": "A man sleeps.", "hypothesis": "A man rests.", "label": "entailment", "idx": 0},
       {"premise": "A dog runs.", "hypothesis": "A cat runs.", "label": "not_entailment", "idx": 1}]


def test_superglue_jsonl(make_params):
    params = make_params()
    write(params.root, "rte", {"train.jsonl": jl(RTE), "val.jsonl": jl(RTE)})
    data.prepare(params, "rte")
    recs = data.load_records(params, "rte", "train")
    assert recs[0] == {"idx": "0", "text_a": "A man sleeps.", "text_b": "A man rests.", "label": "entailment"}


def test_glue_tsv_and_headerless_cola(make_params):
    params = make_params()
    write(params.root, "sst2", {"train.tsv": "sentence\tlabel\ngood \"fun\"\t1\nbad\t0\n",
                                "dev.tsv": "sentence\tlabel\nok\t1\n"})
    data.prepare(params, "sst2")
    assert data.load_records(params, "sst2", "train")[0]["text_a"] == 'good "fun"'
    write(params.root, "cola", {"train.tsv": "gj04\t1\t\tThe cat sat.\ngj04\t0\t*\tCat the sat.\n",
                                "dev.tsv": "gj04\t1\t\tIt rains.\n"})
    data.prepare(params, "cola")
    assert [r["label"] for r in data.load_records(params, "cola", "train")] == ["1", "0"]


def test_copa_and_socialiqa_and_cosmos(make_params):
    params = make_params()
    copa = [{"premise": "It rained.", "choice1": "I got wet.", "choice2": "I was dry.", "question": "effect",
             "label": 0, "idx": 0}]
    write(params.root, "copa", {"train.jsonl": jl(copa), "val.jsonl": jl(copa)})
    data.prepare(params, "copa")
    r = data.load_records(params, "copa", "train")[0]
    assert r["question"] == "What happened as a result?" and r["choices"] == ["I got wet.", "I was dry."]
    siqa = [{"context": "Kai ate.", "question": "Why?", "answerA": "hungry", "answerB": "sad", "answerC": "late"}]
    write(params.root, "socialiqa", {"train.jsonl": jl(siqa), "train-labels.lst": "1\n",
                                     "dev.jsonl": jl(siqa), "dev-labels.lst": "3\n"})
    data.prepare(params, "socialiqa")
    assert data.load_records(params, "socialiqa", "validation")[0]["label"] == 2
    csv = ("id,context,question,answer0,answer1,answer2,answer3,label\n"
           'a1,"He left, sadly.",Why?,x,y,z,w,3\n')
    write(params.root, "cosmosqa", {"train.csv": csv, "valid.csv": csv.replace("a1", "b1")})
    data.prepare(params, "cosmosqa")
    assert data.load_records(params, "cosmosqa", "train")[0]["context"] == "He left, sadly."


@pytest.mark.parametrize("train_text, message", [
    ('{"premise": "a", "hypothesis": "b", "label": "entailment"}\n{bad json\n', "train.jsonl:2: malformed JSON"),
    ('{"premise": "a", "label": "entailment"}\n', "train.jsonl:1: missing field 'hypothesis'"),
    ('{"premise": "a", "hypothesis": "b", "label": "maybe"}\n', "train.jsonl:1: label 'maybe' is not one of"),
    ('{"premise": "a", "hypothesis": "b", "label": "entailment", "idx": 3}\n'
     '{"premise": "c", "hypothesis": "d", "label": "entailment", "idx": 3}\n',
     "train.jsonl:2: duplicate example id '3'"),
    ("\n", "the train split of 'rte' is empty"),
])
def test_bad_rows_are_rejected_with_file_and_line(make_params, train_text, message):
    params = make_params()
    write(params.root, "rte", {"train.jsonl": train_text, "val.jsonl": jl(RTE)})
    with pytest.raises(StiltsError, match=message):
        data.prepare(params, "rte")
    assert not (params.root / "data" / "processed" / "rte").exists()  # nothing half-written


def test_missing_files_say_where_to_put_them(make_params):
    params = make_params()
    with pytest.raises(StiltsError, match=r"put the official files \(train.jsonl, val.jsonl\) in .*data/raw/cb"):
        data.prepare(params, "cb")


def test_senteval_probe_with_an_open_label_set(make_params):
    params = make_params()
    text = "tr\tcat\tThe cat sat .\ntr\tdog\tA dog ran .\nva\tcat\tCats sleep .\nte\tdog\tDogs bark .\n"
    write(params.root, "se_wc", {"data/probing/word_content.txt": text})
    data.prepare(params, "se_wc")
    assert [r["label"] for r in data.load_records(params, "se_wc", "train")] == ["cat", "dog"]
    assert json.loads((params.root / "data/processed/se_wc/meta.json").read_text())["labels"] == ["cat", "dog"]
    from stilts.tasks import registry

    assert data.task_with_labels(params, registry.get("se_wc")).labels == ("cat", "dog")
    write(params.root, "se_wc", {"data/probing/word_content.txt": text.replace("va\tcat", "va\tbird")})
    with pytest.raises(StiltsError, match=r"validation labels \['bird'\] never occur in train"):
        data.prepare(params, "se_wc")


def test_scitail_tsv_format(make_params):
    params = make_params()
    rows = "A plant needs light.\tPlants need light.\tentails\nRocks melt.\tIce is cold.\tneutral\n"
    write(params.root, "scitail", {"tsv_format/scitail_1.0_train.tsv": rows, "tsv_format/scitail_1.0_dev.tsv": rows})
    data.prepare(params, "scitail")
    assert [r["label"] for r in data.load_records(params, "scitail", "validation")] == ["entails", "neutral"]
