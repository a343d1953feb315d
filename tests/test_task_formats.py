"""Every official file format: write a few rows as the official files have them, prepare them, and
run one training step and an evaluation with the task's metric on the tiny model."""

from __future__ import annotations

import gzip
import json
import zipfile

import pytest
import torch

from stilts import data, modeling, tasktypes
from stilts.tasks import registry
from stilts.train import make_accelerator, train


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def wsc(root):
    rows = [{"text": "Mark told Pete many lies about himself , which Pete included in his book .",
             "target": {"span1_index": 2, "span1_text": "Pete", "span2_index": 12, "span2_text": "his"},
             "idx": i, "label": i % 2 == 0} for i in range(6)]
    (root / "train.jsonl").write_text(_jsonl(rows))
    (root / "val.jsonl").write_text(_jsonl(rows[:3]))


def wic(root):
    rows = [{"word": "place", "sentence1": "Do you want to come over to my place later ?",
             "sentence2": "A political system with no place for the less prominent groups .",
             "idx": i, "label": i % 2 == 1, "start1": 31, "start2": 27, "end1": 36, "end2": 32} for i in range(6)]
    (root / "train.jsonl").write_text(_jsonl(rows))
    (root / "val.jsonl").write_text(_jsonl(rows[:3]))


def multirc(root):
    def passage(i):
        return {"idx": i, "version": 1.1, "passage": {"text": "The cat sat on the mat. It was happy.", "questions": [
            {"idx": 0, "question": "Where did the cat sit?", "answers": [
                {"idx": 0, "text": "On the mat", "label": 1}, {"idx": 1, "text": "On the roof", "label": 0}]},
            {"idx": 1, "question": "Was the cat happy?", "answers": [{"idx": 2, "text": "Yes", "label": 1}]}]}}
    (root / "train.jsonl").write_text(_jsonl([passage(i) for i in range(3)]))
    (root / "val.jsonl").write_text(_jsonl([passage(9)]))


def record(root):
    text = "Chelsea beat Olimpija Ljubljana in Slovenia.\n@highlight\nDiego Costa scored"
    ents = [{"start": 0, "end": 6}, {"start": 13, "end": 30}, {"start": 35, "end": 42}, {"start": 56, "end": 66}]
    def row(i):
        return {"source": "Daily mail", "idx": i, "passage": {"text": text, "entities": ents},
                "qas": [{"idx": 0, "query": "@placeholder won the friendly match.",
                         "answers": [{"start": 0, "end": 6, "text": "Chelsea"}]}]}
    (root / "train.jsonl").write_text(_jsonl([row(i) for i in range(3)]))
    (root / "val.jsonl").write_text(_jsonl([row(7), row(8)]))


def stsb(root):
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    lines = [f"{i}\tmain-captions\tMSRvid\t2012test\t000{i}\tnone\tnone\tA plane is taking off.\t"
             f"An air plane is taking off.\t{i % 5}.000\n" for i in range(6)]
    (root / "train.tsv").write_text(head + "".join(lines))
    (root / "dev.tsv").write_text(head + "".join(lines[:4]))


def snli(root):
    head = ("captionID\tpairID\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\t"
            "sentence1\tsentence2\tlabel1\tgold_label\n")
    labels = ["entailment", "neutral", "contradiction", "-", "entailment", "neutral"]
    lines = [f"c{i}\tp{i}\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tA man plays.\tSomeone plays.\t{g}\t{g}\n"
             for i, g in enumerate(labels)]
    (root / "train.tsv").write_text(head + "".join(lines))
    (root / "dev.tsv").write_text(head + "".join(lines[:4]))


def ccg(root):
    lines = ["Pierre Vinken will join the board .\tN/N N (S\\NP)/(S\\NP) (S\\NP)/NP NP/N N .\n",
             "The board joined .\tNP/N N S\\NP .\n"] * 3
    (root / "ccg.train").write_text("".join(lines))
    (root / "ccg.dev").write_text("".join(lines[:2]))


def qasrl(root):
    def sent(i):
        return {"sentenceId": f"TQA:{i}", "sentenceTokens": ["The", "cat", "occurs", "suddenly", "."],
                "verbEntries": {"2": {"verbIndex": 2, "questionLabels": {
                    "What occurs?": {"questionString": "What occurs?", "answerJudgments": [
                        {"sourceId": "a", "isValid": True, "spans": [[0, 2]]},
                        {"sourceId": "b", "isValid": True, "spans": [[1, 2]]}]},
                    "How does something occur?": {"questionString": "How does something occur?", "answerJudgments": [
                        {"sourceId": "a", "isValid": True, "spans": [[3, 4]]}]},
                    "When does it occur?": {"questionString": "When does it occur?", "answerJudgments": [
                        {"sourceId": "a", "isValid": False}]}}}}}
    d = root / "qasrl-v2" / "orig"
    d.mkdir(parents=True)
    for name, n in (("train", 3), ("dev", 2)):
        with gzip.open(d / f"{name}.jsonl.gz", "wt") as f:
            f.write(_jsonl([sent(f"{name}{i}") for i in range(n)]))


def qamr(root):
    (root / "data" / "filtered").mkdir(parents=True)
    (root / "data" / "wiki-sentences.tsv").write_text("Wiki1k:0\tThe cat sat on the mat .\n"
                                                      "Wiki1k:1\tA dog ran home .\n")
    rows = ["Wiki1k:0\t1 2\tw1\t0\t1\tWho sat?\t0 1\tv1:1\tv2:0 1\n",
            "Wiki1k:0\t1 2\tw1\t1\t2\tWhere did the cat sit?\t4 5\tv1:4 5\tv2:3 4 5\n",
            "Wiki1k:1\t2\tw2\t0\t2\tWhat did the dog do?\t2 3\tv1:2 3\tv2:2\n"]
    (root / "data" / "filtered" / "train.tsv").write_text("".join(rows))
    (root / "data" / "filtered" / "dev.tsv").write_text("".join(rows[:2]))


def ep_spr1(root):
    def row(i):
        return {"text": "The cat chased the dog .", "info": {"id": i}, "targets": [
            {"span1": [2, 3], "span2": [0, 2], "label": ["awareness", "volition"]},
            {"span1": [2, 3], "span2": [3, 5], "label": ["changes_possession"] if i % 2 else []}]}
    (root / "spr1").mkdir()
    (root / "spr1" / "spr1.train.json").write_text(_jsonl([row(i) for i in range(4)]))
    (root / "spr1" / "spr1.dev.json").write_text(_jsonl([row(i) for i in range(2)]))


def ep_pos(root):
    row = {"text": "The cat sat .", "targets": [{"span1": [0, 1], "label": "DT"}, {"span1": [1, 2], "label": "NN"},
                                                {"span1": [2, 3], "label": "VBD"}, {"span1": [3, 4], "label": "."}]}
    d = root / "ontonotes" / "const" / "pos"
    d.mkdir(parents=True)
    (d / "train.json").write_text(_jsonl([row] * 4))
    (d / "development.json").write_text(_jsonl([row] * 2))


def aj_def(root):
    data_rows = [{"pair-id": i, "context": f"There is {'a' if i % 2 else 'the'} cat here .",
                  "label": "acceptable" if i % 2 else "unacceptable"} for i in range(10)]
    meta = [{"misc": {"fold1": "dev" if i < 4 else "train", "fold2": "train"}} for i in range(10)]
    (root / "acceptability-definiteness_data.json").write_text(json.dumps(data_rows))
    (root / "acceptability-definiteness_metadata.json").write_text(json.dumps(meta))


def blimp(root):
    with zipfile.ZipFile(root / "BLiMP.zip", "w") as z:
        for p in ("anaphor_agreement", "ellipsis_n_bar"):
            rows = [{"sentence_good": "The cat sat on the mat .", "sentence_bad": "The cat sat the on mat .",
                     "UID": p, "pairID": str(i)} for i in range(20)]
            z.writestr(f"data/{p}.jsonl", _jsonl(rows))
        z.writestr("__MACOSX/data/._x.jsonl", "junk")


FORMATS = {"wsc": wsc, "wic": wic, "multirc": multirc, "record": record, "stsb": stsb, "snli": snli, "ccg": ccg,
           "qasrl": qasrl, "qamr": qamr, "ep_spr1": ep_spr1, "ep_pos": ep_pos, "aj_def": aj_def, "blimp": blimp}


def prepared(make_params, tmp_path, name, **over):
    raw = tmp_path / "raw"
    (raw / name).mkdir(parents=True, exist_ok=True)
    FORMATS[name](raw / name)
    params = make_params(data={"raw_dir": str(raw)}, **over)
    data.prepare(params, name)
    return params


@pytest.mark.parametrize("name", list(FORMATS))
def test_official_format_trains_one_step_and_scores(make_params, tmp_path, name):
    params = prepared(make_params, tmp_path, name, train={"max_steps": 1, "batch_size": 4, "eval_every": 1})
    task = data.task_with_labels(params, registry.get(name))
    settings = params.train_for(name)
    tok = modeling.load_tokenizer(params.model)
    train_ds = data.features(params, name, "train", tok, settings.max_seq_length)
    dev_ds = data.features(params, name, "validation", tok, settings.max_seq_length)
    model = modeling.build(params, task, settings)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tt = tasktypes.get(task.type)
    result = train(model, task, settings, train_ds, dev_ds, tt.collator(tok), make_accelerator(settings, cpu=True),
                   seed=1, progress=False)
    assert result.steps == 1
    assert task.metric in result.best and result.best["examples"] == len(dev_ds)
    assert -1.0 <= result.best[task.metric] <= 1.0
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items() if k.startswith("head."))
    assert isinstance(tt.majority_score(task, dev_ds), float)


def test_prepared_records_per_format(make_params, tmp_path):
    params = prepared(make_params, tmp_path, "snli")
    assert [r["label"] for r in data.load_records(params, "snli", "train")] == \
        ["entailment", "neutral", "contradiction", "entailment", "neutral"]  # '-' dropped, as the official scripts do
    params = prepared(make_params, tmp_path, "multirc")
    recs = data.load_records(params, "multirc", "validation")
    assert [(r["group"], r["label"]) for r in recs] == [("9-0", 1), ("9-0", 0), ("9-1", 1)]
    params = prepared(make_params, tmp_path, "record")
    recs = data.load_records(params, "record", "validation")
    assert [r["candidate"] for r in recs[:4]] == ["Chelsea", "Olimpija Ljubljana", "Slovenia", "Diego Costa"]
    assert recs[0]["text_b"] == "Chelsea won the friendly match." and recs[0]["label"] == 1
    params = prepared(make_params, tmp_path, "qasrl")
    recs = data.load_records(params, "qasrl", "train")
    assert len(recs) == 6  # 2 answerable questions × 3 sentences; the one without a valid answer is dropped
    assert recs[0]["answer_text"] == "The cat" and recs[0]["answers"] == ["The cat", "cat"]
    params = prepared(make_params, tmp_path, "qamr")
    rec = data.load_records(params, "qamr", "train")[1]
    assert rec["answer_text"] == "the mat" and rec["answers"] == ["the mat", "on the mat"]
    params = prepared(make_params, tmp_path, "wsc")
    rec = data.load_records(params, "wsc", "train")[0]
    assert rec["text_a"][rec["span1"][1]:rec["span1"][2]] == "Pete"
    assert rec["text_a"][rec["span2"][1]:rec["span2"][2]] == "his"
    params = prepared(make_params, tmp_path, "aj_def")
    assert len(data.load_records(params, "aj_def", "train")) == 6
    params = prepared(make_params, tmp_path, "ep_pos")
    assert data.task_with_labels(params, registry.get("ep_pos")).labels == (".", "DT", "NN", "VBD")
