import hashlib
from collections import Counter

import pytest

from stilts.generate import suite

TASKS = ["syn_nli", "syn_sentiment", "syn_rte", "syn_copa", "syn_tense", "syn_subjnum", "syn_bshift", "syn_sentlen"]


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("task", TASKS)
def test_generator_is_deterministic(tmp_path, task):
    suite.write_task(task, tmp_path / "a", 50, 20, seed=7)
    suite.write_task(task, tmp_path / "b", 50, 20, seed=7)
    suite.write_task(task, tmp_path / "c", 50, 20, seed=8)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


@pytest.mark.parametrize("task", TASKS)
def test_generated_tasks_prepare_through_the_readers(make_params, task):
    from stilts import data

    params = make_params(data={"generated_train": 200, "generated_validation": 50})
    out = data.prepare(params, task)
    train = data.load_records(params, task, "train")
    assert len(train) == 200 and len(data.load_records(params, task, "validation")) == 50
    labels = Counter(str(r["label"]) for r in train)
    assert len(labels) >= 2 and max(labels.values()) / len(train) < 0.75  # no trivially skewed task
    assert (out / "meta.json").is_file()


def test_nli_labels_follow_the_design():
    import random

    rows = suite.gen_syn_nli(random.Random(1), 300)
    for r in rows:
        if r["label"] == "contradiction":
            assert (" not " in r["premise"]) != (" not " in r["hypothesis"])
