"""The fast path on GPUs keeps the maths: length buckets, the compiled step, and per-device defaults."""

import dataclasses
import types

import pytest
import torch

from stilts import data, modeling, tasktypes
from stilts.step import DEFAULT_BUCKETS, StepOptions, step_options
from stilts.tasks import registry
from stilts.train import make_accelerator, train
from tests.test_train_step import loss_and_grads


def _features(params, task_name, n=8):
    data.prepare(params, task_name)
    tok = modeling.load_tokenizer(params.model)
    ds = data.features(params, task_name, "train", tok, params.train.max_seq_length).select(range(n))
    keep = [k for k in ds.column_names if k != "length"]
    return tok, [{k: ds[i][k] for k in keep} for i in range(n)]


@pytest.mark.parametrize("task_name", ["syn_rte", "syn_copa"])
def test_bucket_padding_gives_the_same_loss_and_gradients(make_params, task_name):
    """Padding to a length bucket (fewer shapes for CUDA graphs) is only more padding: the same loss and
    gradients as dynamic padding to a multiple of 8, also for multiple choice ([batch, choices, length])."""
    params = make_params()
    task = registry.get(task_name)
    tok, feats = _features(params, task_name)
    collate = tasktypes.get(task.type).collator(tok)
    dynamic = collate([dict(f) for f in feats])
    bucketed = collate.with_padding((24, 48))([dict(f) for f in feats])
    assert dynamic["input_ids"].shape[-1] % 8 == 0 and dynamic["input_ids"].shape[-1] < 48
    assert bucketed["input_ids"].shape[-1] == (24 if dynamic["input_ids"].shape[-1] <= 24 else 48)
    assert bucketed["input_ids"].shape[-1] > dynamic["input_ids"].shape[-1]  # the comparison pads more

    torch.manual_seed(0)
    model = modeling.build(params, task, params.train)
    out = loss_and_grads(model, tasktypes.get(task.type).loss, (dynamic, bucketed))
    assert out[0][0] == pytest.approx(out[1][0], abs=1e-6)
    assert torch.allclose(out[0][1], out[1][1], atol=1e-6)


def _train_once(params, monkeypatch, compile_setting):
    monkeypatch.setattr("stilts.step.COMPILE_BACKEND", "aot_eager")
    task = registry.get("syn_rte")
    settings = params.train_for("syn_rte")
    settings = dataclasses.replace(settings, compile=compile_setting)
    tok = modeling.load_tokenizer(params.model)
    ds = data.features(params, "syn_rte", "train", tok, settings.max_seq_length).select(range(20))
    torch.manual_seed(0)
    model = modeling.build(params, task, settings)
    for m in model.modules():  # dropout off: compiled and eager code draw different random masks
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    logged = []
    acc = make_accelerator(settings, cpu=True)
    train(model, task, settings, ds, ds.select(range(4)), tasktypes.get(task.type).collator(tok), acc, seed=1,
          progress=False, log=lambda m, s: logged.append(m.get("train_loss")))
    return [x for x in logged if x is not None], torch.cat([p.detach().flatten() for p in model.parameters()])


def test_compiled_step_trains_like_the_eager_one(make_params, monkeypatch):
    """train.compile: true (torch.compile of loss, forward and backward) reaches the same losses and weights
    as the eager step over 3 steps of 8, 8 and 4 examples in several padded lengths (bucketed, batch size
    changing: one dynamic graph). On CPU the capture runs without code generation (aot_eager); GPU code
    generation and CUDA graphs are checked by benchmarks/gpu_check.sh."""
    params = make_params(train={"max_steps": 0, "epochs": 1, "log_every": 1, "group_by_length": False,
                                "pad_buckets": [16, 32, 48]})
    data.prepare(params, "syn_rte")
    torch._dynamo.reset()
    eager_losses, eager_w = _train_once(params, monkeypatch, False)
    compiled_losses, compiled_w = _train_once(params, monkeypatch, True)
    assert len(eager_losses) == 3
    assert compiled_losses == pytest.approx(eager_losses, abs=1e-5)
    assert torch.allclose(eager_w, compiled_w, atol=1e-5)


def test_step_options_per_device():
    settings = types.SimpleNamespace(compile="auto", pad_buckets=[], max_seq_length=100)
    cuda = types.SimpleNamespace(device=torch.device("cuda"), num_processes=1)
    cpu = types.SimpleNamespace(device=torch.device("cpu"), num_processes=1)
    assert step_options(settings, cuda).compiled and not step_options(settings, cpu).compiled
    assert not step_options(settings, types.SimpleNamespace(device=torch.device("cuda"), num_processes=2)).compiled
    assert step_options(settings, cuda).buckets == (32, 64, 96, 100) and step_options(settings, cpu).buckets == ()
    assert DEFAULT_BUCKETS[-1] == 512
    settings.compile, settings.pad_buckets = True, [128, 64]
    assert step_options(settings, cpu) == StepOptions(True, (64, 128))
    settings.compile = False
    assert step_options(settings, cuda) == StepOptions(False, (64, 128))


def test_attention_auto_per_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    assert modeling.resolve_attn_implementation("auto", "bf16") == "sdpa"
    assert modeling.resolve_attn_implementation("eager", "bf16") == "eager"  # an explicit value wins
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for precision in ("bf16", "no"):
        assert modeling.resolve_attn_implementation("auto", precision) == modeling.CPU_ATTENTION[precision]
    assert modeling.resolve_attn_implementation("sdpa", "no") == "sdpa"


def test_compile_and_bucket_keys_are_validated(make_params):
    from stilts.errors import StiltsError

    assert make_params(train={"compile": False}).train.compile is False
    assert make_params(train={"compile": "auto", "pad_buckets": [16, 48]}).train.pad_buckets == [16, 48]
    with pytest.raises(StiltsError, match="'train.compile' must be auto, true or false"):
        make_params(train={"compile": "fast"})
    with pytest.raises(StiltsError, match=r"'train.pad_buckets' must reach max_seq_length \(48\)"):
        make_params(train={"pad_buckets": [16, 32]})
    with pytest.raises(StiltsError, match="'model.attn_implementation' must be one of"):
        make_params(model={"attn_implementation": "flash"})
