"""Padded positions per real token in a study's batches: padded to a multiple of 8 or to each batch's longest
sequence, training batches (length-grouped, as trained) and dev batches (longest first) at two batch sizes.

    python benchmarks/padding.py                       # the default study (params.yaml, data prepared)
    python benchmarks/padding.py --params configs/minilm-real.yaml --eval-batch-sizes 128,32

A padded position costs a CPU as much as a real token (there is no tensor-core shape to round up to), so the
ratio (tokens computed / real tokens) is the share of a pass's work the padding adds. Multiple-choice tasks
are left out (their lengths sum the choices). Run it after `make run` (or `stilts prepare`).
"""

from __future__ import annotations

import argparse
import math
import sys

import bench_env
import torch

from stilts import config, data, modeling
from stilts.tasks import registry


def _padded(lengths: list[int], multiple: int) -> int:
    return math.ceil(max(lengths) / multiple) * multiple * len(lengths)


def ratio(batches: list[list[int]], multiple: int) -> float:
    real = sum(sum(b) for b in batches)
    return sum(_padded(b, multiple) for b in batches) / real


def train_batches(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    from transformers.trainer_pt_utils import LengthGroupedSampler

    order = list(LengthGroupedSampler(batch_size, lengths=lengths, generator=torch.Generator().manual_seed(seed)))
    return [[lengths[i] for i in order[k:k + batch_size]] for k in range(0, len(order), batch_size)]


def dev_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    ordered = sorted(lengths, reverse=True)
    return [ordered[k:k + batch_size] for k in range(0, len(ordered), batch_size)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--eval-batch-sizes", default="128,32")
    args = ap.parse_args()
    bench_env.quiet()
    params = config.load(args.params)
    tokenizer = modeling.load_tokenizer(params.model)
    print(f"# {bench_env.describe_machine()}\n# {args.params}: padded positions / real tokens (1.00 = no padding)\n")
    eval_sizes = [int(b) for b in args.eval_batch_sizes.split(",")]
    print("| task | train ×8 | train longest | " + " | ".join(f"dev {b} ×8 | dev {b} longest" for b in eval_sizes)
          + " |")
    print("|---|---|---|" + "---|---|" * len(eval_sizes))
    for task in params.all_tasks:
        if registry.get(task).type == "multiple_choice":
            continue
        s = params.train_for(task)
        train = data.features(params, task, "train", tokenizer, s.max_seq_length)
        if s.max_train_examples and len(train) > s.max_train_examples:
            train = train.shuffle(seed=0).select(range(s.max_train_examples))  # as a cell does
        dev = data.features(params, task, "validation", tokenizer, s.max_seq_length)
        dev_lengths = list(dev["length"])[:s.max_eval_examples or None]
        tb = train_batches(list(train["length"]), s.batch_size, s.seed)
        cells = [f"{ratio(tb, 8):.2f}", f"{ratio(tb, 1):.2f}"]
        for b in eval_sizes:
            db = dev_batches(dev_lengths, b)
            cells += [f"{ratio(db, 8):.2f}", f"{ratio(db, 1):.2f}"]
        print(f"| {task} | " + " | ".join(cells) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
