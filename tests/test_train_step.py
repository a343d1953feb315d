"""One training step and an evaluation per task type on the tiny model."""

import pytest
import torch

from stilts import data, modeling, tasktypes
from stilts.tasks import registry
from stilts.train import make_accelerator, resolve_mixed_precision, train


@pytest.mark.parametrize("task_name", ["syn_sentiment", "syn_rte", "syn_copa", "syn_tense"])
def test_one_step_and_eval_per_task_type(make_params, monkeypatch, task_name):
    """On CPU every batch, trained or evaluated, is padded to its longest sequence and no further."""
    from stilts.tasktypes.common import PadCollator

    padded, collate_batch = [], PadCollator.__call__

    def recording(self, features):
        batch = collate_batch(self, features)
        if not self.choices:  # multiple choice: recorded in the call for its flattened choices
            padded.append((max(len(f["input_ids"]) for f in features), batch["input_ids"].shape[-1]))
        return batch

    monkeypatch.setattr(PadCollator, "__call__", recording)
    params = make_params(train={"max_steps": 1, "batch_size": 4, "eval_every": 1})
    data.prepare(params, task_name)
    task = registry.get(task_name)
    settings = params.train_for(task_name)
    tok = modeling.load_tokenizer(params.model)
    train_ds = data.features(params, task_name, "train", tok, settings.max_seq_length)
    dev_ds = data.features(params, task_name, "validation", tok, settings.max_seq_length)
    model = modeling.build(params, task, settings)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    acc = make_accelerator(settings, cpu=True)
    logged = []
    result = train(model, task, settings, train_ds, dev_ds, tasktypes.get(task.type).collator(tok), acc, seed=1,
                   log=lambda m, s: logged.append(m), progress=False)
    assert result.steps == 1
    assert 0.0 <= result.best[task.metric] <= 1.0 and result.best["examples"] == len(dev_ds)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("head.") for k in changed) and any(k.startswith("encoder.") for k in changed)
    assert any("dev_" + task.metric in m for m in logged)
    assert len(padded) >= 2 and all(width == longest for longest, width in padded)
    assert any(longest % 8 for longest, _ in padded)  # a batch a multiple of 8 would have padded further


def test_features_are_cached_and_keyed_by_max_length(make_params):
    params = make_params()
    data.prepare(params, "syn_rte")
    tok = modeling.load_tokenizer(params.model)
    a = data.features(params, "syn_rte", "train", tok, 48)
    data.features(params, "syn_rte", "train", tok, 48)
    b = data.features(params, "syn_rte", "train", tok, 16)
    keys = list((params.root / "data" / "features" / "syn_rte").iterdir())
    assert len(keys) == 2
    assert max(a["length"]) > 16 >= max(b["length"])


def test_auto_precision_is_fp32_without_fast_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert resolve_mixed_precision("auto") == "no"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert resolve_mixed_precision("auto") == "bf16"
    assert resolve_mixed_precision("no") == "no"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN kept below bf16: emulated, so fp32
    assert resolve_mixed_precision("auto") == "no"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_bf16")
    assert resolve_mixed_precision("auto") == "bf16"


def test_max_seq_length_above_model_limit(make_params):
    from stilts.errors import StiltsError

    params = make_params(train={"max_seq_length": 4096})
    with pytest.raises(StiltsError, match="above the model's limit of 128"):
        modeling.build(params, registry.get("syn_rte"), params.train_for("syn_rte"))


def test_missing_model_path(make_params, tmp_path):
    from stilts.errors import StiltsError

    params = make_params(model={"name": str(tmp_path / "nope")})
    with pytest.raises(StiltsError, match="does not exist"):
        modeling.load_tokenizer(params.model)
    (tmp_path / "empty").mkdir()
    params = make_params(model={"name": str(tmp_path / "empty")})
    with pytest.raises(StiltsError, match="is not a model directory"):
        modeling.load_tokenizer(params.model)


def test_early_stopping_after_patience_evaluations(make_params):
    params = make_params(train={"max_steps": 20, "batch_size": 4, "eval_every": 1, "patience": 2, "lr": 1e-12,
                                "warmup_ratio": 0.0})
    data.prepare(params, "syn_tense")
    task = registry.get("syn_tense")
    settings = params.train_for("syn_tense")
    tok = modeling.load_tokenizer(params.model)
    ds = data.features(params, "syn_tense", "train", tok, 48)
    dev = data.features(params, "syn_tense", "validation", tok, 48)
    model = modeling.build(params, task, settings)
    result = train(model, task, settings, ds, dev, tasktypes.get(task.type).collator(tok),
                   make_accelerator(settings, cpu=True), seed=1, progress=False)
    # lr ~0: the score never improves after the first evaluation, so 2 more evaluations end the run
    assert result.steps == 3 and result.stopped_early and result.best_step == 1


def test_speed_options_that_keep_the_maths(make_params):
    """Dynamic padding and fused AdamW are speed options only: padding to the longest in the batch (exactly,
    as on CPUs, or up to a multiple of 8, as on GPUs) gives the same loss and gradients as padding to
    max_seq_length, and a fused AdamW step the same weights as the per-parameter one. (Length grouping changes
    the batches, so it is compared on real data with restarts instead: README, "Speed options and results".)"""
    from stilts.train import _optimizer, pad_multiple

    params = make_params()
    data.prepare(params, "syn_rte")
    task = registry.get("syn_rte")
    settings = params.train_for("syn_rte")
    tok = modeling.load_tokenizer(params.model)
    ds = data.features(params, "syn_rte", "train", tok, 64).select(range(8))
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids", "labels") if k in ds.column_names]
    feats = [{k: ds[i][k] for k in keys} for i in range(8)]
    collate = tasktypes.get(task.type).collator(tok)
    dynamic = collate([dict(f) for f in feats])
    exact = collate.with_padding((), pad_multiple("cpu"))([dict(f) for f in feats])
    static = tok.pad([dict(f) for f in feats], padding="max_length", max_length=64, return_tensors="pt")
    longest = max(len(f["input_ids"]) for f in feats)
    assert longest % 8 and exact["input_ids"].shape[1] == longest  # these 8 examples: rounding up pads more
    assert dynamic["input_ids"].shape[1] == -(-longest // 8) * 8 and pad_multiple("cuda") == 8

    torch.manual_seed(0)
    model = modeling.build(params, task, settings)
    grads = loss_and_grads(model, tasktypes.get(task.type).loss, (static, dynamic, exact))
    for loss, grad in grads[1:]:
        assert loss == pytest.approx(grads[0][0], abs=1e-6)
        assert torch.allclose(grad, grads[0][1], atol=1e-6)

    weights = []
    for fused in (True, False):
        torch.manual_seed(0)
        m = modeling.build(params, task, settings)
        for p in m.parameters():
            p.grad = torch.full_like(p, 0.01)
        opt = _optimizer(m, settings, "cpu" if fused else "meta")  # any other device type: not fused
        assert bool(opt.defaults.get("fused")) == fused
        opt.step()
        weights.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert torch.allclose(weights[0], weights[1], atol=1e-6)


def loss_and_grads(model, loss_fn, batches) -> list[tuple[float, torch.Tensor]]:
    """(loss, all gradients) of each batch, dropout off: comparisons of the maths, not of random masks."""
    model.eval()
    out = []
    for batch in batches:
        model.zero_grad()
        loss = loss_fn(model(batch), batch)
        loss.backward()
        out.append((loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])))
    return out
