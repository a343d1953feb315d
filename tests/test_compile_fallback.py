"""A compiled training step that fails (compilation, graph capture, endless recompiles) does not take the cell
down: the run continues on the eager step from the same step and state, and ends with the losses and weights
of a purely eager run. On CPU the compiled path is aot_eager (as in tests/test_compiled_step.py)."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch

from stilts import cells, data, modeling, tasktypes, tracking
from stilts import step as step_mod
from stilts.tasks import registry
from stilts.train import make_accelerator, train

REAL_COMPILE = torch.compile
ROOT = Path(__file__).resolve().parents[1]


def _train(params, monkeypatch, compiled: bool, examples: int = 20, grad_accum: int = 1, inject=None):
    """Train syn_rte for one epoch (batch 8, dropout off: compiled and eager code draw different masks);
    `inject(model)` returns a replacement for torch.compile that sees the model. Returns the per-step train
    losses, the final weights and the TrainResult."""
    monkeypatch.setattr(step_mod, "COMPILE_BACKEND", "aot_eager")
    task = registry.get("syn_rte")
    settings = dataclasses.replace(params.train_for("syn_rte"), compile=compiled, grad_accum=grad_accum)
    tok = modeling.load_tokenizer(params.model)
    ds = data.features(params, "syn_rte", "train", tok, settings.max_seq_length).select(range(examples))
    torch.manual_seed(0)
    model = modeling.build(params, task, settings)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    if inject is not None:
        monkeypatch.setattr(torch, "compile", inject(model))
    torch._dynamo.reset()
    losses = []
    result = train(model, task, settings, ds, ds.select(range(4)), tasktypes.get(task.type).collator(tok),
                   make_accelerator(settings, cpu=True), seed=1, progress=False,
                   log=lambda m, s: losses.append(m["train_loss"]) if "train_loss" in m else None)
    monkeypatch.setattr(torch, "compile", REAL_COMPILE)
    return losses, torch.cat([p.detach().flatten() for p in model.parameters()]), result


def failing_at(call: int, where: str, seen: dict, compile_for_real: bool = True):
    """torch.compile whose compiled function fails on its `call`-th call: in the forward, or in the backward
    after part of the gradients were accumulated (a hook on the first encoder layer's weight raises)."""
    def inject(model):
        def compile_(fn, **kwargs):
            inner = REAL_COMPILE(fn, **kwargs) if compile_for_real else fn
            calls = [0]

            def compiled(batch):
                calls[0] += 1
                if calls[0] == call and where == "forward":
                    raise RuntimeError("injected failure in the compiled forward")
                loss = inner(batch)
                if calls[0] == call and where == "backward":
                    weight = next(p for n, p in model.named_parameters() if "layer.0." in n and p.dim() == 2)
                    handle = []

                    def fail(grad):
                        handle[0].remove()
                        seen["grads_before_failure"] = sum(p.grad is not None for p in model.parameters())
                        raise RuntimeError("injected failure in the compiled backward")

                    handle.append(weight.register_hook(fail))
                return loss

            return compiled

        return compile_

    return inject


@pytest.fixture
def rte_params(make_params):
    params = make_params(train={"max_steps": 0, "epochs": 1, "log_every": 1, "group_by_length": False,
                                "pad_buckets": [16, 32, 48]})
    data.prepare(params, "syn_rte")
    return params


@pytest.mark.parametrize("where, call, grad_accum, compile_for_real", [
    ("backward", 2, 1, True),  # step 2 of 3, in the real compiled path, some gradients already accumulated
    ("forward", 3, 1, False),  # the last step
    ("backward", 4, 2, False),  # the second batch of the second optimizer step: the first is computed again
])
def test_failure_mid_training_continues_on_the_eager_step(rte_params, monkeypatch, where, call, grad_accum,
                                                          compile_for_real, capfd, tmp_path):
    seen = {}
    eager_losses, eager_w, eager = _train(rte_params, monkeypatch, False, examples=36 if grad_accum > 1 else 20,
                                          grad_accum=grad_accum)
    losses, weights, result = _train(rte_params, monkeypatch, True, examples=36 if grad_accum > 1 else 20,
                                     grad_accum=grad_accum,
                                     inject=failing_at(call, where, seen, compile_for_real))
    assert len(eager_losses) == 3 and eager.compile_tags == {"compile": "off"}
    assert losses == pytest.approx(eager_losses, abs=1e-5)
    assert torch.allclose(weights, eager_w, atol=1e-5)
    assert result.compile_tags["compile"] == "fallback"
    assert f"injected failure in the compiled {where}" in result.compile_tags["compile_fallback_reason"]
    if where == "backward":
        assert seen["grads_before_failure"] > 0  # a partial backward, whose gradients the fallback dropped
    err = capfd.readouterr().err
    assert "the compiled training step failed" in err
    logs = tmp_path / "gpu_check"  # benchmarks/gpu_check.sh keeps each step's output as a log and reports it
    logs.mkdir()
    (logs / "parity.log").write_text(f"# eager losses ...\n{err}parity=ok\n")
    assert gpu_check_summary().main(logs) == 1
    assert f"- parity: {result.compile_tags['compile_fallback_reason']}" in (logs / "gpu_check.md").read_text()


def gpu_check_summary():
    spec = importlib.util.spec_from_file_location("gpu_check_summary", ROOT / "benchmarks" / "gpu_check_summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_reports_a_run_without_fallback(tmp_path):
    (tmp_path / "parity.log").write_text("# compiled losses 0.69 0.68\nparity=ok max_loss_diff=0.00e+00\n")
    assert gpu_check_summary().main(tmp_path) == 0
    assert "Compiled step: no fallback to the eager step in any run." in (tmp_path / "gpu_check.md").read_text()


def test_recompiling_past_the_limit_falls_back(rte_params, monkeypatch):
    """A real dynamo error: the last batch of 1 example makes dynamo compile a second graph (it specialises
    sizes 0 and 1); with the limit at 1 graph per function that is a recompile too many."""
    monkeypatch.setattr(step_mod, "COMPILE_RECOMPILE_LIMIT", 1)
    eager_losses, eager_w, _ = _train(rte_params, monkeypatch, False, examples=17)
    losses, weights, result = _train(rte_params, monkeypatch, True, examples=17)
    assert len(eager_losses) == 3
    assert losses == pytest.approx(eager_losses, abs=1e-5)
    assert torch.allclose(weights, eager_w, atol=1e-5)
    assert result.compile_tags == {"compile": "fallback", "compile_fallback_reason":
                                   "more than 1 compilations of one function (recompile_limit)"}


def test_a_compiled_run_is_tagged_on_and_a_fallback_in_mlflow(rte_params, monkeypatch):
    """The cell's MLflow run carries stilts.compile (and the reason of a fallback)."""
    monkeypatch.setattr(step_mod, "COMPILE_BACKEND", "aot_eager")
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # the compiled path without compile time
    rte_params.train.compile = True
    cells.transfer(rte_params, "none", "syn_rte", 0)
    rte_params.train.compile = False
    cells.transfer(rte_params, "none", "syn_rte", 1)

    def broken_backend(graph, example_inputs):  # a real dynamo error: BackendCompilerFailed, from the first step
        raise RuntimeError("no kernel for this GPU")

    monkeypatch.setattr(torch, "compile", REAL_COMPILE)
    monkeypatch.setattr(step_mod, "COMPILE_BACKEND", broken_backend)
    rte_params.train.compile = True
    cells.transfer(rte_params, "none", "syn_rte", 2)
    runs = tracking.search_runs(rte_params).set_index("tags.stilts.restart")
    assert set(runs["status"]) == {"FINISHED"}
    assert runs.loc["0", "tags.stilts.compile"] == "on" and runs.loc["1", "tags.stilts.compile"] == "off"
    assert runs.loc["2", "tags.stilts.compile"] == "fallback"
    assert "BackendCompilerFailed" in runs.loc["2", "tags.stilts.compile_fallback_reason"]
    assert "no kernel for this GPU" in runs.loc["2", "tags.stilts.compile_fallback_reason"]
