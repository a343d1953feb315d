"""The compiled step computes what the eager step computes, on this device: train twice, compare.

    python benchmarks/compiled_parity.py --shape tiny --precision no      # on a GPU: inductor + CUDA graphs

Trains one model through stilts.train.train with train.compile true (length buckets, torch.compile, CUDA
graphs on GPUs) and once with false (dynamic padding, eager), from the same weights on the same batches,
dropout off (the two draw different random masks), and compares the train loss at every step and the
weight update (final − initial weights). On CPUs the capture runs without code generation (aot_eager:
inductor's CPU compile takes minutes), as in tests/test_compiled_step.py. Exit status 1 when a difference
exceeds the tolerance of the precision (fp32 1e-4 relative, bf16 5e-2). Last line: parity=<ok|FAILED> ...
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import bench_env
import bounded
import torch

TOLERANCE = {"no": 1e-4, "bf16": 5e-2, "fp16": 5e-2}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(bench_env.SHAPES), default="tiny")
    ap.add_argument("--tokenizer")
    ap.add_argument("--task", default="syn_rte")
    ap.add_argument("--data-dir", type=Path, default=bench_env.SHARED_DATA)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--precision", default="no", choices=("auto", "no", "bf16"))
    args = ap.parse_args(argv)

    import train_throughput as tt

    bench_env.quiet()

    from stilts import data, modeling, tasktypes
    from stilts import step as stilts_step
    from stilts.step import step_options
    from stilts.train import make_accelerator, resolve_mixed_precision, train

    if bench_env.device() == "cpu":
        stilts_step.COMPILE_BACKEND = "aot_eager"
    args.model = str(bench_env.shape_model(args.shape, args.tokenizer or bench_env.embedded_tokenizer(),
                                           bounded.scratch(f"stilts-{args.shape}-")))
    args.batch_size, args.steps = [args.batch_size], [args.steps]
    params, tok, task = tt.load(args)
    n = args.steps[0] * args.batch_size[0]
    ds = data.features(params, task.name, "train", tok, args.max_length).select(range(n))
    out = {}
    for compiled in (False, True):
        settings = dataclasses.replace(tt.settings_for(params, args, args.batch_size[0], args.steps[0]),
                                       compile=compiled, lr=1e-3, log_every=1)
        torch.manual_seed(0)
        model = modeling.build(params, task, settings)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        before = torch.cat([p.detach().flatten().float().cpu() for p in model.parameters()])
        losses: list[float] = []

        def log(metrics, step, losses=losses):
            if "train_loss" in metrics:
                losses.append(metrics["train_loss"])

        acc = make_accelerator(settings)
        train(model, task, settings, ds, ds.select(range(8)), tasktypes.get(task.type).collator(tok), acc, seed=1,
              progress=False, log=log)
        after = torch.cat([p.detach().flatten().float().cpu() for p in model.parameters()])
        out[compiled] = (losses, after - before, step_options(settings, acc))
    precision = resolve_mixed_precision(args.precision)
    tol = TOLERANCE[precision]
    (le, de, _), (lc, dc, opts) = out[False], out[True]
    loss_diff = max(abs(a - b) / max(1.0, abs(a)) for a, b in zip(le, lc))
    update_diff = float((dc - de).norm() / de.norm())
    ok = len(le) == len(lc) == args.steps[0] and loss_diff <= tol and update_diff <= tol
    print(f"# {bench_env.describe_machine()}")
    print(f"# {args.shape} shape on {args.task}, {args.steps[0]} steps × batch {args.batch_size[0]}, precision "
          f"{precision}, compiled step: {opts}, backend {stilts_step.COMPILE_BACKEND}")
    print(f"# eager losses    {' '.join(f'{x:.6f}' for x in le)}")
    print(f"# compiled losses {' '.join(f'{x:.6f}' for x in lc)}")
    print(f"# {bench_env.compile_counters()}")
    print(f"parity={'ok' if ok else 'FAILED'} max_loss_diff={loss_diff:.2e} update_diff={update_diff:.2e} "
          f"tolerance={tol:.0e}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
