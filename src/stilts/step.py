"""One training step: batch → loss with its gradients, eager or compiled (torch.compile, CUDA graphs on GPUs),
and the compiled step's fallback to the eager one. The loop that calls it is stilts.train."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Sequence lengths a compiled step pads to when train.pad_buckets is empty: few shapes, each captured once
# (32-token steps up to 256, 64-token steps above), and max_seq_length itself.
DEFAULT_BUCKETS = (32, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)
COMPILE_BACKEND = "inductor"  # tests on CPU use "aot_eager": the same graph capture without code generation


@dataclass(frozen=True)
class StepOptions:
    compiled: bool  # the loss, forward and backward through torch.compile (CUDA graphs on GPUs)
    buckets: tuple[int, ...]  # padded sequence lengths; () = dynamic padding (train.pad_multiple)


def step_options(settings, accelerator) -> StepOptions:
    """`train.compile: auto` compiles on one CUDA process: there a step of a small batch is launch-bound
    (an H200 measured 5% MFU eagerly), and CUDA graphs replay it in one launch. On CPUs compiling took minutes
    and was not faster (docs/performance.md); under several processes it is left to the user."""
    compiled = settings.compile is True or (
        settings.compile == "auto" and accelerator.device.type == "cuda" and accelerator.num_processes == 1)
    buckets = tuple(sorted(settings.pad_buckets))
    if compiled and not buckets:
        buckets = tuple(b for b in DEFAULT_BUCKETS if b < settings.max_seq_length) + (settings.max_seq_length,)
    return StepOptions(compiled, buckets)


# A compiled step falls back to the eager one when torch._dynamo would compile one function a 9th time: a run
# compiles one graph (batch size and padded length are dynamic) and one more for a batch of a single example
# (dynamo specialises sizes 0 and 1); 8 is dynamo's own recompile_limit, past which it would silently run
# that function uncompiled while still checking the guards of every graph it keeps.
COMPILE_RECOMPILE_LIMIT = 8
COMPILE_FALLBACK_WARNING = "stilts: warning: the compiled training step failed"  # benchmarks/gpu_check reads it


def step_loss(model, tt, accelerator, compiled: bool):
    """batch → loss, with its gradients accumulated (forward and backward: a compiled backward can fail too).
    The prepared model autocasts its forward and returns fp32 outputs (Accelerate). The step's `tags` say how
    it ran: stilts.compile on, off, or fallback (with stilts.compile_fallback_reason)."""
    def loss_of(batch):
        return tt.loss(model(batch), batch)

    def eager_step(batch):
        loss = loss_of(batch)
        accelerator.backward(loss)
        return loss

    if not compiled:
        eager_step.tags = {"compile": "off"}
        return eager_step
    mode = "reduce-overhead" if accelerator.device.type == "cuda" else None  # CUDA graphs, replayed per shape
    if mode:  # one CUDA graph per (batch size, bucket) is the design: the buckets bound their count
        import torch._inductor.config as inductor

        if hasattr(inductor.triton, "cudagraph_dynamic_shape_warn_limit"):  # torch ≥ 2.5
            inductor.triton.cudagraph_dynamic_shape_warn_limit = None
    fn = torch.compile(loss_of, backend=COMPILE_BACKEND, mode=mode)

    def compiled_step(batch):
        length = batch["input_ids"].shape[-1]
        for t in batch.values():  # one graph for every batch size and padded length: no recompiles
            if isinstance(t, torch.Tensor) and t.dim():
                for d, n in enumerate(t.shape):
                    if d == 0 or n == length:
                        torch._dynamo.maybe_mark_dynamic(t, d)
        if mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        dynamo = torch._dynamo.config  # set around the call only (config.patch costs ~1 ms a step)
        before = dynamo.recompile_limit, dynamo.fail_on_recompile_limit_hit
        dynamo.recompile_limit, dynamo.fail_on_recompile_limit_hit = COMPILE_RECOMPILE_LIMIT, True
        try:
            loss = fn(batch)
        finally:
            dynamo.recompile_limit, dynamo.fail_on_recompile_limit_hit = before
        accelerator.backward(loss)
        return loss

    return _FallbackStep(compiled_step, eager_step, model, accelerator)


class _FallbackStep:
    """The compiled step until it raises (compilation, graph capture, past COMPILE_RECOMPILE_LIMIT), then the
    eager step for the rest of the run. The failure comes before the optimizer step, so parameters and
    optimizer state are untouched; the gradients a partial backward may have accumulated are dropped and the
    optimizer step's batches so far (gradient accumulation) are computed again, eagerly."""

    def __init__(self, compiled, eager, model, accelerator):
        self.compiled, self.eager, self.model, self.accelerator = compiled, eager, model, accelerator
        self.window: list = []  # this optimizer step's batches so far
        self.tags = {"compile": "on"}

    def __call__(self, batch):
        if self.compiled is None:
            return self.eager(batch)
        self.window.append(batch)
        try:
            loss = self.compiled(batch)
        except (MemoryError, torch.OutOfMemoryError):
            raise  # the eager step needs more memory, not less
        except Exception as e:  # noqa: BLE001 — any failure of the compiled path: the eager step runs instead
            return self._fall_back(e)
        if self.accelerator.sync_gradients:
            self.window = []
        return loss

    def _fall_back(self, error: Exception):
        import contextlib
        import sys

        if isinstance(error, torch._dynamo.exc.FailOnRecompileLimitHit):
            reason = f"more than {COMPILE_RECOMPILE_LIMIT} compilations of one function (recompile_limit)"
        else:
            lines = [x.strip() for x in str(error).splitlines() if x.strip()]
            reason = f"{type(error).__name__}: {' '.join(lines[:3])}"[:500]
        print(f"{COMPILE_FALLBACK_WARNING} ({reason}); this run continues on the eager step from the same step "
              "and state", file=sys.stderr, flush=True)
        self.tags = {"compile": "fallback", "compile_fallback_reason": reason}
        self.compiled = None
        with contextlib.suppress(Exception):  # its graphs (and CUDA graph memory pools) are not used again
            torch._dynamo.reset()
        for p in self.model.parameters():
            p.grad = None  # the state before this optimizer step's first batch (zero_grad sets None)
        window, self.window = self.window, []
        for earlier in window[:-1]:
            self.eager(earlier)
        return self.eager(window[-1])
