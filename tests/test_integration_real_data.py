"""Real files from ../shared/data (official formats): prepare every present task and train each type briefly.

Runs only when ../shared/data exists (it does in CI); the files are read in place, never copied here.
Where the copy there holds only part of a task (a FewGLUE or k-shot subset, no train split),
`data.files` points the split at what is there, as a researcher with such a subset would.
"""

import dataclasses

import pytest

from stilts import data, modeling, tasktypes
from stilts.tasks import registry
from stilts.train import make_accelerator, train
from tests.conftest import SHARED_DATA

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not present")]

KSHOT = "k-shot/16-13"
FILES = {
    "boolq": {"train": "fewglue32/train.jsonl"},
    "multirc": {"train": "fewglue32/train.jsonl"},
    "record": {"train": "fewglue32/train.jsonl", "validation": "fewglue32/train.jsonl"},  # no dev set there
    "mnli": {"train": f"{KSHOT}/train.tsv", "validation": f"{KSHOT}/dev_matched.tsv"},
    "qqp": {"train": f"{KSHOT}/train.tsv", "validation": f"{KSHOT}/dev.tsv"},
    "snli": {"train": f"{KSHOT}/train.tsv", "validation": f"{KSHOT}/dev.tsv"},
    "qnli": {"train": f"{KSHOT}/train.tsv"},
    "cosmosqa": {"train": "valid.csv"},  # only the dev set is there
    "qasrl": {"train": "qasrl-v2/orig/dev.jsonl.gz", "validation": "qasrl-v2/orig/test.jsonl.gz"},
}
# (train, validation) record counts: official example counts from shared/data/MANIFEST.md; MultiRC counts
# answer options (its official dev set has 4,848), BLiMP's 67,000 pairs are split 4:1 by a hash
EXPECTED = {"rte": (2490, 277), "cb": (250, 56), "copa": (400, 100), "sst2": (20000, 872), "cola": (8551, 1043),
            "mrpc": (3667, 408), "socialiqa": (33410, 1954), "stsb": (5749, 1500), "wnli": (635, 71),
            "boolq": (32, 3270), "mnli": (48, 48), "qqp": (32, 32), "qnli": (32, 5463), "cosmosqa": (2985, 2985),
            "multirc": (None, 4848), "record": (None, None), "snli": (None, None), "qasrl": (None, None),
            "blimp": (None, None)}


@pytest.fixture
def real_params(make_params):
    return make_params(data={"raw_dir": str(SHARED_DATA), "files": FILES})


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_prepare_real_files(real_params, task):
    import json

    out = data.prepare(real_params, task)
    meta = json.loads((out / "meta.json").read_text())
    counts = meta["counts"]
    for split, want in zip(("train", "validation"), EXPECTED[task]):
        assert counts[split] > 0 and (want is None or counts[split] == want), (split, counts)
    assert meta["source"] == "local" and len(meta["source_files"]) >= 1
    if task == "blimp":
        assert counts["train"] + counts["validation"] == 67_000 and 0.15 < counts["validation"] / 67_000 < 0.25
    if task == "snli":
        assert counts["train"] <= 48  # pairs without a gold label ('-') are dropped


@pytest.mark.parametrize("task", ["rte", "copa", "stsb", "multirc", "record", "qasrl", "blimp"])
def test_train_each_type_on_real_data(real_params, task):
    data.prepare(real_params, task)
    t = data.task_with_labels(real_params, registry.get(task))
    settings = dataclasses.replace(real_params.train_for(task), max_steps=3, batch_size=4, max_eval_examples=64)
    tok = modeling.load_tokenizer(real_params.model)
    train_ds = data.features(real_params, task, "train", tok, 64).select(range(32))
    dev_ds = data.features(real_params, task, "validation", tok, 64).select(range(48))
    model = modeling.build(real_params, t, settings)
    tt = tasktypes.get(t.type)
    result = train(model, t, settings, train_ds, dev_ds, tt.collator(tok), make_accelerator(settings, cpu=True),
                   seed=1, progress=False)
    assert result.steps == 3 and -1.0 <= result.best[t.metric] <= 1.0 and result.best["examples"] == 48
    assert -1.0 <= tt.majority_score(t, dev_ds) <= 1.0


def test_semb_ranks_real_candidates(real_params):
    """The embedded sentence encoder on real training samples: RTE's sentence pairs are closer to MRPC's
    (news sentence pairs) than to CoLA's single short sentences (0.73 vs 0.46 on 1,000 examples)."""
    import dataclasses

    from stilts.selection import rank

    real_params.rank = dataclasses.replace(real_params.rank, targets=["rte"], candidates=["mrpc", "cola"],
                                           methods=["semb"], sample_size=100)
    result = rank.run(real_params)
    r = result["ranking"].set_index(["target", "candidate"])["score"]
    assert r[("rte", "mrpc")] > r[("rte", "cola")]
    assert r.between(-1, 1).all() and len(r) == 2
    assert result["evaluation"].empty  # nothing measured in this experiment
