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


@pytest.mark.parametrize("family", FAMILIES)
def test_token_types_reach_only_families_that_have_several(project, family):
    """BERT and ELECTRA read token types; RoBERTa and XLM-R have one, DeBERTa-v3 none, and ModernBERT takes no
    token_type_ids: type ids a tokenizer of any family may emit reach only the first two."""
    params = project(family)
    model = modeling.build(params, registry.get("syn_rte"), params.train_for("syn_rte")).eval()
    assert ("token_type_ids" in model.inputs) == (family in ("bert", "electra"))
    tok = modeling.load_tokenizer(params.model)
    batch = dict(tok(["A cat.", "The dog sat."], ["It sat.", "On a mat."], padding=True, return_tensors="pt"))
    batch["token_type_ids"] = torch.ones_like(batch["input_ids"])
    with torch.no_grad():
        assert model(batch).shape == (2, 2)


@pytest.mark.parametrize("family", FAMILIES)
def test_frozen_probe_trains_the_scalar_mix_and_head_only(project, family):
    """Frozen probing (edge probing with a scalar mix, as Tenney et al.): one mix weight per hidden state the
    family returns (embeddings + every layer); the encoder stays as it was."""
    params, name = project(family), "ep_spr1"
    task = data.task_with_labels(params, registry.get(name))
    tok, train_ds, dev_ds = _features(params, name)
    model = modeling.build(params, task, params.train_for(name), frozen=True)
    batch = tasktypes.get(task.type).collator(tok)([dict(train_ds.remove_columns(["length"])[0])])
    states = model.encoder(**{k: batch[k] for k in model.inputs}, output_hidden_states=True).hidden_states
    assert len(states) == model.mix.weights.numel() == model.encoder.config.num_hidden_layers + 1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train(params, name, model, tok, train_ds, dev_ds)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert {k.split(".")[0] for k in changed} == {"mix", "head"} and "mix.weights" in changed


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_auto_loads_what_the_family_has(project, family, monkeypatch):
    """`model.attn_implementation: auto`: eager on this CPU; on a GPU sdpa where the family has it (DeBERTa-v2/v3
    has eager only). The GPU's choice loads here too and computes what eager computes."""
    params = project(family)
    settings = params.train_for("syn_rte")
    assert params.model.attn_implementation == "auto" and modeling.attn_for(params, settings) == "eager"
    model = modeling.build(params, registry.get("syn_rte"), settings)
    assert model.encoder.config._attn_implementation == "eager"
    with monkeypatch.context() as m:
        m.setattr(torch.cuda, "is_available", lambda: True)
        m.delenv("ACCELERATE_USE_CPU", raising=False)
        on_gpu = modeling.attn_for(params, settings)
    assert on_gpu == ("eager" if family == "deberta-v3" else "sdpa")
    tok = modeling.load_tokenizer(params.model)
    enc = tok(["The cat sat on the mat, and the dog chased the cat around the garden twice.", "A plane."],
              padding=True, return_tensors="pt")  # longer than ModernBERT's window of 16 tokens; padded
    inputs = {k: enc[k] for k in modeling.encoder_inputs(model.encoder)}
    outs = []
    for attn in ("eager", on_gpu):
        encoder = modeling.load_encoder(params.model.name, None, attn).eval()
        assert encoder.config._attn_implementation == attn
        with torch.no_grad():
            outs.append(encoder(**inputs).last_hidden_state[enc["attention_mask"].bool()])
    assert torch.allclose(outs[0], outs[1], atol=1e-5)


def _losses_and_weights(params, compiled: bool, name: str = "syn_rte"):
    tok, train_ds, dev_ds = _features(params, name)
    settings = dataclasses.replace(params.train_for(name), compile=compiled, max_steps=0, epochs=1,
                                   group_by_length=False, pad_buckets=[32, 128])
    torch.manual_seed(0)
    model = modeling.build(params, registry.get(name), settings)
    for m in model.modules():  # compiled and eager code draw different dropout masks
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    losses = []
    torch._dynamo.reset()
    _train(params, name, model, tok, train_ds.select(range(10)), dev_ds.select(range(4)), settings,
           log=lambda m, s: losses.append(m["train_loss"]) if "train_loss" in m else None)
    return losses, torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("family", FAMILIES)
def test_compiled_step_trains_like_the_eager_one(project, family, monkeypatch):
    """train.compile: true captures loss, forward and backward of each family in one dynamic graph (here without
    code generation: aot_eager) and reaches the eager step's losses over batches of 4, 4 and 2 in two buckets."""
    aot_eager, graphs = torch._dynamo.lookup_backend("aot_eager"), []

    def counting_aot_eager(gm, example_inputs):
        graphs.append(gm)
        return aot_eager(gm, example_inputs)

    monkeypatch.setattr("stilts.step.COMPILE_BACKEND", counting_aot_eager)
    params = project(family)
    eager_losses, eager_w = _losses_and_weights(params, compiled=False)
    compiled_losses, compiled_w = _losses_and_weights(params, compiled=True)
    assert len(graphs) == 1  # captured whole: no graph break, no recompilation for the new batch size or length
    assert len(eager_losses) == 3 and compiled_losses == pytest.approx(eager_losses, abs=1e-5)
    assert torch.allclose(eager_w, compiled_w, atol=1e-5)


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("family", FAMILIES)
def test_interrupted_training_resumes_to_the_same_weights(project, family, monkeypatch, tmp_path):
    """Training state saved every 2 steps; a run stopped after step 3 resumes from step 2 in a fresh model and
    ends with the weights and dev scores of an uninterrupted run."""
    from stilts import resume

    params, name = project(family), "wic"
    task = data.task_with_labels(params, registry.get(name))
    tok, train_ds, dev_ds = _features(params, name)
    settings = dataclasses.replace(params.train_for(name), max_steps=4, eval_every=2)

    def run(state_dir=None):
        torch.manual_seed(0)
        model = modeling.build(params, task, settings)
        result = _train(params, name, model, tok, train_ds, dev_ds, settings, state_dir=state_dir, save_every=2)
        return result, model.state_dict()

    reference, weights = run()
    calls = []

    def stop_at_step_3(point):
        calls.append(point)
        if calls.count("train_step") == 3:
            raise Interrupted

    with monkeypatch.context() as m:
        m.setattr(resume, "fault", stop_at_step_3)
        with pytest.raises(Interrupted):
            run(tmp_path / "state")
    assert resume.read_loop(tmp_path / "state")["step"] == 2
    resumed, resumed_weights = run(tmp_path / "state")
    assert resumed.steps == 4 and resumed.history == reference.history
    assert all(torch.equal(resumed_weights[k], v) for k, v in weights.items())
