"""Shared fixtures: a tiny randomly initialised BERT with a tokenizer trained offline, and tiny params."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest
import yaml

# the session guard: a test run that changed anything in the checkout fails
from tests.checkout_guard import (  # noqa: F401
    pytest_addoption,
    pytest_sessionfinish,
    pytest_sessionstart,
    pytest_terminal_summary,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("STILTS_OFFLINE", "1")  # no grid is downloaded on first use

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """Accelerate keeps one precision per process; a test that trains in-process (the CLI's `main`) must not
    inherit the precision an earlier test chose."""
    yield
    if "accelerate.state" in sys.modules:
        sys.modules["accelerate.state"].AcceleratorState._reset_state()


@pytest.fixture(scope="session", autouse=True)
def _work_outside_the_checkout(tmp_path_factory):
    """Every test starts in a folder of its own session's tmp, never in the checkout: what a test resolves
    against the working directory (MLflow's default ./mlruns, a params.yaml, a checkpoint's path) is not the
    checkout's study."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("cwd"))
        mp.setenv("STILTS_CACHE", str(tmp_path_factory.mktemp("cache")))  # fetched grids: never the user's cache
        yield


# what a caller's environment may hold (a shell with a tracking server, `mlflow run`, a fault left exported) and
# no test may inherit: each test that needs one sets it through monkeypatch or a command's own environment
OUTSIDE_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "STILTS_FAULT",
               "STILTS_WORKER", "STILTS_WORKDIR")


@pytest.fixture(scope="session", autouse=True)
def _nothing_from_the_callers_environment():
    with pytest.MonkeyPatch.context() as mp:
        for key in OUTSIDE_ENV:
            mp.delenv(key, raising=False)
        yield


def _corpus() -> list[str]:
    from stilts.generate import suite

    rng = random.Random(0)
    lines = [r["premise"] + " " + r["hypothesis"] for r in suite.gen_syn_nli(rng, 300)]
    lines += [r["sentence"] for r in suite.gen_syn_sentiment(rng, 300)]
    lines += ["What was the cause? What happened as a result? yes no true false the a an of to is was"]
    return lines


def build_tiny_model(path: Path, mlm_head: bool = False) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(_corpus(), trainers.WordPieceTrainer(vocab_size=600, special_tokens=special))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = BertTokenizerFast(tokenizer_object=tok, model_max_length=128)
    fast.save_pretrained(path)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    import torch

    torch.manual_seed(0)
    (BertForMaskedLM if mlm_head else BertModel)(config).save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_mlm_model(tmp_path_factory) -> Path:
    """The same tiny BERT with a (random) masked-LM head, as pretrained MLM checkpoints have."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert-mlm"), mlm_head=True)


def tiny_params_dict(model_path: Path, **over) -> dict:
    raw = {
        "model": {"name": str(model_path)},
        "tasks": {"intermediate": ["syn_nli"], "target": ["syn_rte"], "probe": ["syn_tense"]},
        "study": {"restarts": 1},
        "data": {"generated_train": 64, "generated_validation": 32},
        "mlflow": {"experiment": "test"},
        "train": {"lr": 1e-3, "batch_size": 8, "eval_batch_size": 32, "epochs": 1, "max_seq_length": 48,
                  "log_every": 2},
    }
    for key, value in over.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


@pytest.fixture
def make_params(tiny_model, tmp_path):
    """Write params.yaml in a fresh directory and load it; MLflow goes to that directory's sqlite db."""
    from stilts import config

    def make(**over):
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(tiny_params_dict(tiny_model, **over), sort_keys=False))
        return config.load(path)

    return make


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory):
    """family → folder of a tiny random encoder of that family with a tokenizer of its kind, each built once
    (tests/tiny_encoders.py lists the families)."""
    from tests import tiny_encoders

    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = tiny_encoders.build(family, tmp_path_factory.mktemp(f"tiny-{family}"))
        return built[family]

    return get
