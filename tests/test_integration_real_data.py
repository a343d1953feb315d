"""Real files from ../shared/data (official formats): prepare every present task and train each type briefly.

Runs only when ../shared/data exists (it does in CI); the files are read in place, never copied here.
"""

import pytest

from stilts import data, modeling, tasktypes
from stilts.tasks import registry
from stilts.train import make_accelerator, train
from tests.conftest import SHARED_DATA

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not present")]

# (train, validation) example counts from shared/data/MANIFEST.md
EXPECTED = {"rte": (2490, 277), "cb": (250, 56), "copa": (400, 100), "sst2": (20000, 872), "cola": (8551, 1043),
            "mrpc": (3667, 408), "socialiqa": (33410, 1954)}


@pytest.fixture
def real_params(make_params):
    return make_params(data={"raw_dir": str(SHARED_DATA)})


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_prepare_real_files(real_params, task):
    out = data.prepare(real_params, task)
    meta = (out / "meta.json").read_text()
    assert f'"train": {EXPECTED[task][0]}' in meta and f'"validation": {EXPECTED[task][1]}' in meta
    assert '"source": "local"' in meta and len(data.load_records(real_params, task, "train")) == EXPECTED[task][0]


@pytest.mark.parametrize("task", ["rte", "sst2", "copa", "cb"])
def test_train_each_type_on_real_data(real_params, task):
    data.prepare(real_params, task)
    t = registry.get(task)
    settings = real_params.train_for(task)
    import dataclasses

    settings = dataclasses.replace(settings, max_steps=3, batch_size=4, max_eval_examples=64)
    tok = modeling.load_tokenizer(real_params.model)
    train_ds = data.features(real_params, task, "train", tok, 64).select(range(32))
    dev_ds = data.features(real_params, task, "validation", tok, 64).select(range(48))
    model = modeling.build(real_params, t, settings)
    result = train(model, t, settings, train_ds, dev_ds, tasktypes.get(t.type).collator(tok),
                   make_accelerator(settings, cpu=True), seed=1, progress=False)
    assert result.steps == 3 and 0.0 <= result.best[t.metric] <= 1.0
