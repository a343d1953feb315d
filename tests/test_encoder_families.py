"""Every encoder family × every task type, in-process, on tiny random models with tokenizers of their own kind
(tests/tiny_encoders.py): character and word spans land on the right sub-word tokens, each task type trains
and scores, and resume, frozen probing, `attn_implementation: auto` and the compiled step work per family.
Checkpoints, logged models, transfer and the CLI: test_encoder_families_cells.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import yaml

from stilts import config, data, metrics, modeling, tasktypes
from stilts.errors import StiltsError
from stilts.tasks import registry
from stilts.tasktypes.common import char_span_to_tokens, encode_words, word_span_to_tokens
from stilts.train import make_accelerator, train
from tests.conftest import tiny_params_dict
from tests.test_task_formats import FORMATS
from tests.tiny_encoders import FAMILIES

TRAIN = {"mixed_precision": "no", "max_steps": 2, "batch_size": 4, "eval_batch_size": 16, "eval_every": 2,
         "log_every": 1, "max_seq_length": 128, "lr": 1e-3}
TASKS = {"classification": "syn_rte", "multiple_choice": "syn_copa", "span_pair": "wic", "edge_probing": "ep_spr1",
         "tagging": "ccg", "span_qa": "qasrl", "grouped_binary": "multirc", "regression": "stsb"}


@pytest.fixture(scope="module")
def project(tiny_family, tmp_path_factory):
    """One project with a task of every type prepared; `project(family)` → its params (the family's model)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # fp32 here; Accelerate keeps one precision per process
    root = tmp_path_factory.mktemp("families")
    for name in TASKS.values():
        if name in FORMATS:
            (root / "raw" / name).mkdir(parents=True)
            FORMATS[name](root / "raw" / name)

    def params_for(family: str, **over):
        path = root / f"params-{family}.yaml"
        raw = tiny_params_dict(tiny_family(family), train=TRAIN, **over)
        raw["data"] = {**raw["data"], "raw_dir": str(root / "raw"), "generated_train": 16, "generated_validation": 10}
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return config.load(path)

    base = params_for(FAMILIES[0])
    for name in TASKS.values():
        data.prepare(base, name)
    yield params_for
    AcceleratorState._reset_state()


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def _joined(text: str) -> str:
    return "".join(text.split()).lower()


# --- spans → tokens, checked by hand against the text they cover ---

SENTENCE_A = "Mark told Pete many lies about himself, which Pete included in his book."
SENTENCE_B = "Pete wrote a book."
# (sequence, start, end, text): the first word, after a comma, two words, before the final period, sequence 2
CHAR_SPANS = [(0, 0, 4, "Mark"), (0, 10, 14, "Pete"), (0, 31, 38, "himself"), (0, 46, 50, "Pete"),
              (0, 63, 71, "his book"), (0, 67, 71, "book"), (1, 0, 4, "Pete"), (1, 13, 17, "book")]
WORDS = "Pierre Vinken will join the board .".split()


@pytest.mark.parametrize("family", FAMILIES)
def test_char_spans_map_onto_the_tokens_of_their_text(tiny_family, family):
    """Byte-level BPE offsets may include the leading space ('Ġword'), SentencePiece ones the '▁' (or a '▁'
    token alone); either way the token span covers exactly the span's text and no character of a neighbour."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_family(family))
    enc = tok(SENTENCE_A, SENTENCE_B, return_offsets_mapping=True)
    ids, offsets, seq = enc["input_ids"], enc["offset_mapping"], enc.sequence_ids()
    texts = (SENTENCE_A, SENTENCE_B)
    for s, start, end, text in CHAR_SPANS:
        assert texts[s][start:end] == text
        first, last = char_span_to_tokens(offsets, seq, s, start, end)
        assert _norm(tok.decode(ids[first:last])) == text.lower(), (family, text)
        assert all(seq[i] == s for i in range(first, last))
        for i in (first - 1, last):  # the neighbours hold only other characters (or the space between)
            if 0 <= i < len(ids) and seq[i] == s:
                a, b = offsets[i]
                assert not texts[s][max(a, start):min(b, end)].strip(), (family, text, i)
    assert char_span_to_tokens(offsets, seq, 1, 500, 505) is None  # outside (e.g. truncated away)


@pytest.mark.parametrize("family", FAMILIES)
def test_words_map_onto_their_tokens(tiny_family, family):
    """Pre-split words (tagging, edge probing): each word's tokens decode to the word; a token that is only
    the space between words (a lone '▁') belongs to none."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_family(family))
    enc, word_ids = encode_words(tok, [WORDS], 64)
    ids, wid = enc["input_ids"][0], word_ids[0]
    for k, word in enumerate(WORDS):
        first, end = word_span_to_tokens(wid, k, k + 1)
        assert _norm(tok.decode(ids[first:end])) == word.lower(), (family, word)
        assert all(wid[i] == k for i in range(first, end))
    first, end = word_span_to_tokens(wid, 4, 6)
    assert _norm(tok.decode(ids[first:end])) == "the board"
    unassigned = [i for i, w in enumerate(wid) if w is None and ids[i] not in tok.all_special_ids]
    assert all(not tok.decode([ids[i]]).strip() for i in unassigned)


def _check_span_pair(tok, ds, records):
    for feat, rec in zip(ds, records):
        for (first, last), key in zip(feat["spans"], ("span1", "span2")):
            s, start, end = rec[key]
            text = (rec["text_a"] if s == 0 else rec["text_b"])[start:end]
            assert _norm(tok.decode(feat["input_ids"][first:last])) == _norm(text)


def _check_span_qa(tok, ds, records):
    for feat, rec in zip(ds, records):
        first, last = feat["labels"]
        assert _norm(tok.decode(feat["input_ids"][first:last + 1])) == _norm(rec["answer_text"])
    refs = {c: ds[c] for c in ds.column_names if c.startswith("ref_")}
    gold = np.asarray(ds["labels"])  # the gold token spans, read back through the offsets: every answer exact
    assert metrics.compute("span_f1_em", gold, gold, refs)["em"] == 1.0


def _check_edge_probing(tok, ds, records):
    for feat, rec in zip(ds, records):
        for spans, target in zip(feat["spans"], rec["targets"]):
            for (first, last), key in zip(spans, ("span1", "span2")):
                a, b = target[key]
                assert _norm(tok.decode(feat["input_ids"][first:last])) == _norm(" ".join(rec["words"][a:b]))


def _check_tagging(tok, ds, records):
    special = set(tok.all_special_ids)
    for feat, rec in zip(ds, records):
        ids, labels = feat["input_ids"], feat["labels"]
        firsts = [i for i, y in enumerate(labels) if y != -100]  # one labelled first sub-token per word
        assert len(firsts) == len(rec["words"])
        ends = firsts[1:] + [max(i for i, t in enumerate(ids) if t not in special) + 1]
        for word, a, b in zip(rec["words"], firsts, ends):
            assert _norm(tok.decode(ids[a:b])) == word.lower()


def _check_pairs(tok, ds, records):
    for feat, rec in zip(ds, records):
        text = _joined(tok.decode(feat["input_ids"], skip_special_tokens=True))
        parts = [_joined(rec[k]) for k in ("text_a", "text_b") if k in rec]
        assert text.startswith(parts[0]) and text.endswith(parts[-1])


def _check_choices(tok, ds, records):
    for feat, rec in zip(ds, records):
        for ids, choice in zip(feat["input_ids"], rec["choices"]):
            assert _joined(tok.decode(ids, skip_special_tokens=True)).endswith(_joined(choice))


CHECK_FEATURES = {"classification": _check_pairs, "multiple_choice": _check_choices, "span_pair": _check_span_pair,
                  "edge_probing": _check_edge_probing, "tagging": _check_tagging, "span_qa": _check_span_qa,
                  "grouped_binary": _check_pairs, "regression": _check_pairs}


def _features(params, name):
    tok = modeling.load_tokenizer(params.model)
    settings = params.train_for(name)
    return (tok, data.features(params, name, "train", tok, settings.max_seq_length),
            data.features(params, name, "validation", tok, settings.max_seq_length))


def _train(params, name, model, tok, train_ds, dev_ds, settings=None, **kw):
    task = data.task_with_labels(params, registry.get(name))
    settings = settings or params.train_for(name)
    return train(model, task, settings, train_ds, dev_ds, tasktypes.get(task.type).collator(tok),
                 make_accelerator(settings, cpu=True), seed=1, progress=False, **kw)


@pytest.mark.parametrize("task_type", list(TASKS))
@pytest.mark.parametrize("family", FAMILIES)
def test_task_type_trains_and_scores(project, family, task_type):
    """The featurised inputs cover the right text, two steps change the encoder and the head, and the dev
    metric is computed on every dev example."""
    params, name = project(family), TASKS[task_type]
    task = data.task_with_labels(params, registry.get(name))
    assert task.type == task_type
    tok, train_ds, dev_ds = _features(params, name)
    CHECK_FEATURES[task_type](tok, train_ds, data.load_records(params, name, "train"))
    torch.manual_seed(0)
    model = modeling.build(params, task, params.train_for(name))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = _train(params, name, model, tok, train_ds, dev_ds)
    assert result.steps == 2 and result.best["examples"] == len(dev_ds)
    assert np.isfinite(result.best[task.metric])
    changed = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"encoder", "head"}
