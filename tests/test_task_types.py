"""Composite metrics against hand-computed values, character/word spans → sub-word tokens for BERT-
and RoBERTa-style fast tokenizers, frozen probing, and bad span input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stilts import data, metrics, modeling, tasktypes
from stilts.errors import StiltsError
from stilts.tasks import registry
from stilts.tasktypes.common import char_span_to_tokens, encode_words, word_span_to_tokens
from stilts.train import make_accelerator, train


def test_multirc_f1a_and_question_em():
    out = metrics.compute("multirc_f1a_em", [2.0, -1.0, -3.0, 1.0], [1, 0, 1, 1], {"ref_group": ["a", "a", "b", "b"]})
    # decisions 1,0,0,1: F1a tp=2 fp=0 fn=1 → 0.8; question a all right, b not → EM 0.5
    assert out["f1a"] == pytest.approx(0.8) and out["em"] == 0.5 and out["multirc_f1a_em"] == pytest.approx(0.65)


def test_record_best_candidate_f1_em():
    refs = {"ref_group": ["q1", "q1", "q2", "q2"], "ref_candidate": ["Chelsea", "Diego Costa", "the Blues", "Jose"],
            "ref_answers": [["Diego Costa"]] * 2 + [["Blues fans"]] * 2}
    out = metrics.compute("record_f1_em", [0.1, 0.9, 0.5, 0.2], [0, 1, 0, 0], refs)
    # q1 → "Diego Costa": F1 1, EM 1; q2 → "the Blues" vs "Blues fans": F1 2·1/(1+2), EM 0
    assert out["f1"] == pytest.approx((1 + 2 / 3) / 2) and out["em"] == 0.5
    assert out["record_f1_em"] == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)


def test_span_f1_em_from_token_offsets():
    context = "The cat sat on the mat"
    offsets = [[-1, -1], [0, 3], [4, 7], [8, 11], [12, 14], [15, 18], [19, 22]]
    refs = {"ref_context": [context, context], "ref_offsets": [offsets, offsets],
            "ref_answers": [["on the mat"], ["cat"]]}
    out = metrics.compute("span_f1_em", [[5, 6], [0, 0]], [[4, 6], [2, 2]], refs)
    # "the mat" vs "on the mat": articles dropped → [mat] vs [on, mat]: F1 2/3, EM 0; a special token → "" → 0
    assert out["f1"] == pytest.approx(1 / 3) and out["em"] == 0 and out["span_f1_em"] == pytest.approx(1 / 6)


def test_micro_f1_token_accuracy_and_correlation():
    out = metrics.compute("micro_f1", [[1, 1], [0, 0], [1, 1]], [[1, 0], [0, 1], [-1, -1]])
    assert out["micro_f1"] == pytest.approx(0.5)  # tp 1, fp 1, fn 1; the padding row is ignored
    assert metrics.compute("token_accuracy", [[1, 5, 0], [3, 0, 0]], [[1, -100, 2], [3, -1, -1]])[
        "token_accuracy"] == pytest.approx(2 / 3)
    out = metrics.compute("pearson_spearman", [1, 2, 3, 4], [1, 2, 3, 5])
    assert out["spearman"] == pytest.approx(1.0) and out["pearson"] == pytest.approx(6.5 / np.sqrt(43.75))
    assert metrics.compute("pearson_spearman", [1, 1, 1], [1, 2, 3])["pearson_spearman"] == 0.0


@pytest.fixture(scope="module")
def roberta_style_tokenizer(tmp_path_factory):
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer(trim_offsets=True)
    corpus = ["Do you want to come over to my place later?", "A political system with no place for groups.",
              "The cat sat on the mat."] * 20
    bpe.train_from_iterator(corpus, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.post_processor = processors.RobertaProcessing(("</s>", bpe.token_to_id("</s>")),
                                                      ("<s>", bpe.token_to_id("<s>")),
                                                      trim_offsets=True, add_prefix_space=True)
    tok = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                               cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                               add_prefix_space=True)
    assert tok.vocab_size > 100
    return tok


@pytest.mark.parametrize("style", ["bert", "roberta"])
def test_char_spans_map_onto_subword_tokens(style, tiny_model, roberta_style_tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model) if style == "bert" else roberta_style_tokenizer
    a, b = "Do you want to come over to my place later ?", "A political system with no place for groups ."
    enc = tok(a, b, return_offsets_mapping=True)
    ids, offsets, seq = enc["input_ids"], enc["offset_mapping"], enc.sequence_ids()
    for s, start in ((0, 31), (1, 27)):
        first, end = char_span_to_tokens(offsets, seq, s, start, start + 5)
        assert tok.decode(ids[first:end]).strip().lower() == "place"
        assert all(seq[i] == s for i in range(first, end))
    assert char_span_to_tokens(offsets, seq, 1, 500, 505) is None  # outside (e.g. truncated away)
    words = "Pierre Vinken will join the board".split()
    enc, word_ids = encode_words(tok, [words], 64)
    first, end = word_span_to_tokens(word_ids[0], 4, 6)
    assert tok.decode(enc["input_ids"][0][first:end]).strip().lower() == "the board"
    firsts = [i for i, w in enumerate(word_ids[0]) if w is not None and (i == 0 or word_ids[0][i - 1] != w)]
    assert len(firsts) == len(words)  # one first sub-token per word (tagging reads these)


def test_frozen_probe_trains_only_the_scalar_mix_and_head(make_params, tmp_path):
    params = make_params(train={"max_steps": 2, "batch_size": 4, "eval_every": 2, "lr": 1e-2})
    data.prepare(params, "syn_tense")
    task = registry.get("syn_tense")
    settings = params.train_for("syn_tense")
    tok = modeling.load_tokenizer(params.model)
    ds = data.features(params, "syn_tense", "train", tok, settings.max_seq_length)
    model = modeling.build(params, task, settings, frozen=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, task, settings, ds, ds.select(range(8)), tasktypes.get(task.type).collator(tok),
          make_accelerator(settings, cpu=True), seed=1, progress=False)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and not any(k.startswith("encoder.") for k in changed)
    assert "mix.weights" in changed and any(k.startswith("head.") for k in changed)


def test_span_outside_text_names_the_line(make_params, tmp_path):
    raw = tmp_path / "raw" / "wic"
    raw.mkdir(parents=True)
    row = {"word": "place", "sentence1": "my place", "sentence2": "no place", "idx": 0, "label": True,
           "start1": 3, "end1": 8, "start2": 3, "end2": 8}
    bad = {**row, "idx": 1, "start2": 30, "end2": 35}
    (raw / "train.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(bad) + "\n")
    (raw / "val.jsonl").write_text(json.dumps(row) + "\n")
    params = make_params(data={"raw_dir": str(tmp_path / "raw")})
    with pytest.raises(StiltsError, match=r"train.jsonl:2: span2 \[30, 35\) is outside the text \(8 characters\)"):
        data.prepare(params, "wic")
    assert not (params.root / "data" / "processed" / "wic").exists()


def test_paper_task_suite_is_registered():
    from stilts.tasks.paper import SUITE as PAPER_TASKS

    names = set(registry.names())
    assert sum(len(v) for v in PAPER_TASKS.values()) == 46
    assert all(t in names for ts in PAPER_TASKS.values() for t in ts)
    for t in PAPER_TASKS["probe"]:
        assert "probe" in registry.get(t).roles
