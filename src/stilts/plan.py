"""`stilts plan`: the grid of a params profile, its size in examples, tokens and FLOPs, and its cost.

FLOPs: 6 × non-embedding parameters × tokens for training, 2 × for evaluation. Time here comes
from a short measured calibration (a few training steps of the embedded encoder on this machine);
GPU-hours divide each run's FLOPs by the speed stilts' loop measured on that GPU class at that batch size
(gpu_calibration.csv, filled from benchmarks/gpu_check.sh), or by an assumed fraction of the peak (--mfu).
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

from stilts.config import parse_source
from stilts.tasks import registry

# Datasheet dense (no sparsity) bf16 tensor-core peaks, TFLOP/s (fp16 for V100; SXM parts for A100/H100/H200).
# They define MFU, as usual. An H200 here reached ~790 on an 8192³ bf16 matmul (80% of 989); GPU-hours come
# from the measured achieved TFLOP/s in gpu_calibration.csv, so they do not depend on these peaks, which only
# carry a measured MFU over to a GPU class never measured.
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0,
                   "V100": 125.0, "RTX4090": 165.0, "RTX3090": 71.0}


CALIBRATION = Path(__file__).with_name("gpu_calibration.csv")


@dataclass
class Run:
    kind: str  # sweep | intermediate | transfer
    task: str
    train_examples: int
    eval_examples: int
    tokens_per_example: float
    batch_size: int = 16

    def flops(self, n_params: int) -> float:
        """6·N per training token, 2·N per evaluation token."""
        return n_params * self.tokens_per_example * (6 * self.train_examples + 2 * self.eval_examples)


@dataclass
class Efficiency:
    mfu: float  # fraction of the GPU class's datasheet dense bf16 peak
    how: str  # where the figure comes from
    row: dict  # the measurement it comes from (gpu_calibration.csv)


def calibration(path: Path = CALIBRATION) -> dict[str, dict[int, dict]]:
    """gpu class → batch size → the latest measurement (rows of gpu_calibration.csv)."""
    table: dict[str, dict[int, dict]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(line for line in f if not line.startswith("#")):
            cur = table.setdefault(row["gpu"], {}).get(int(row["batch_size"]))
            if cur is None or row["date"] >= cur["date"]:
                table[row["gpu"]][int(row["batch_size"])] = row
    return table


def efficiency(gpu: str, batch: int, table: dict[str, dict[int, dict]]) -> Efficiency | None:
    """The measured MFU of stilts' loop on `gpu` at `batch`; for a combination never measured, an estimate
    that says how it was made. None when nothing was measured at all."""
    ref = gpu if table.get(gpu) else max(table, key=lambda g: len(table[g]), default=None)
    if ref is None:
        return None
    rows = table[ref]
    near = min(rows, key=lambda b: (abs(b - batch), -b))
    row = rows[near]
    mfu = float(row["achieved_tflops"]) / GPU_PEAK_TFLOPS[ref]
    if near == batch:
        how = f"measured on {ref}"
    elif batch < near:  # launch-bound below the measured batch: the same step time, fewer examples per step
        mfu *= batch / near
        how = f"not measured: {ref}'s step time at batch {near} assumed"
    else:
        how = f"not measured: {ref}'s MFU at batch {near} assumed"
    if ref != gpu:
        how += f"; {gpu} never measured: the same share of its peak"
    return Efficiency(mfu, how, row)


def _sizes(params, task: str, tokenizer=None) -> tuple[int, int, float, bool]:
    """(train size, dev size, mean tokens per example, measured?) from prepared data, else the declaration."""
    from stilts import data
    from stilts.io import read_json

    meta = params.path(params.data.processed_dir) / task / "meta.json"
    t = registry.get(task)
    if meta.is_file():
        m = read_json(meta)
        mean = 0.0
        if tokenizer is not None:  # the cached features hold each example's length (all choices for MC)
            ds = data.features(params, task, "train", tokenizer, params.train_for(task).max_seq_length)
            mean = float(sum(ds["length"]) / max(len(ds), 1))
        return m["counts"]["train"], m["counts"]["validation"], mean, True
    if t.generator:
        return params.data.generated_train, params.data.generated_validation, 0.0, False
    return t.train_size or 10_000, t.dev_size or 1_000, 0.0, False


def _size(settings, n_train: int, n_dev: int, limit: int | None = None) -> tuple[int, int]:
    """(train examples seen, dev examples evaluated) of one run."""
    n = min(n_train, settings.max_train_examples or n_train, limit or n_train)
    per_step = settings.batch_size * settings.grad_accum
    total = settings.max_steps * per_step if settings.max_steps else n * settings.epochs
    steps = math.ceil(total / per_step)
    evals = math.ceil(steps / settings.eval_every) if settings.eval_every else settings.epochs
    return total, evals * min(n_dev, settings.max_eval_examples or n_dev) + n_dev


def runs(params, tokenizer=None) -> list[Run]:
    import dataclasses

    from stilts import sweep

    out = []
    for name in params.all_tasks:
        n_train, n_dev, mean_tokens, _ = _sizes(params, name, tokenizer)
        s = params.train_for(name)
        if mean_tokens <= 0:  # no data yet: assume 60% of the maximum length (× choices folded into the batch)
            mean_tokens = 0.6 * s.max_seq_length * (4 if registry.get(name).type == "multiple_choice" else 1)
        if sweep.needs_sweep(params, name):
            for point in sweep.points(params, name):
                st = dataclasses.replace(s, **{**point, **params.sweep.overrides})
                out.append(Run("sweep", name, *_size(st, n_train, n_dev), mean_tokens, st.batch_size))
        for source in params.sources:
            src, n = parse_source(source)
            if src == name:
                out += [Run("intermediate", source, *_size(s, n_train, n_dev, n), mean_tokens, s.batch_size)] \
                    * params.intermediate_restarts_of(source)
        if name in params.transfer_tasks:
            sources = [src for src in params.sources if parse_source(src)[1] is None or name in params.tasks.target]
            cells = params.restarts_of("none") + sum(params.restarts_of(src) for src in sources)
            out += [Run("transfer", name, *_size(s, n_train, n_dev), mean_tokens, s.batch_size)] * cells
    return out


def non_embedding_params(model_name: str) -> tuple[int, str]:
    from transformers import AutoConfig

    from stilts.modeling import resolve_model_name

    try:
        c = AutoConfig.from_pretrained(resolve_model_name(model_name), trust_remote_code=False)
        h, layers, ff = c.hidden_size, c.num_hidden_layers, getattr(c, "intermediate_size", 4 * c.hidden_size)
        return layers * (4 * h * h + 2 * h * ff + 9 * h + ff), c.model_type
    except OSError:
        known = {"roberta-large": (24, 1024, 4096), "roberta-base": (12, 768, 3072),
                 "bert-base-uncased": (12, 768, 3072)}
        layers, h, ff = known.get(model_name.split("/")[-1], (24, 1024, 4096))
        return layers * (4 * h * h + 2 * h * ff + 9 * h + ff), "assumed"


def calibrate(steps: int = 6, batch: int = 16, length: int = 64) -> float:
    """Achieved training FLOP/s of the embedded encoder on this machine (fp32 or the auto precision)."""
    import torch
    from transformers import AutoModel

    from stilts.config import EMBEDDED_MODEL, TrainCfg
    from stilts.modeling import resolve_attn_implementation, resolve_model_name
    from stilts.train import resolve_mixed_precision

    precision = resolve_mixed_precision(TrainCfg().mixed_precision)
    model = AutoModel.from_pretrained(resolve_model_name(EMBEDDED_MODEL),
                                      attn_implementation=resolve_attn_implementation("auto", precision))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    x = torch.randint(1000, 5000, (batch, length))
    bf16 = precision == "bf16"
    n, _ = non_embedding_params(EMBEDDED_MODEL)
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=x).last_hidden_state.float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    return 6 * n * batch * length * steps / (time.perf_counter() - start)


def report(params, gpu: str = "A100", mfu: float | None = None, measure: bool = True) -> str:
    if gpu not in GPU_PEAK_TFLOPS:
        from stilts.errors import unknown

        raise unknown("GPU class", gpu, GPU_PEAK_TFLOPS)
    params.require_tasks()
    tokenizer = None
    if measure:
        try:
            from stilts.modeling import load_tokenizer

            tokenizer = load_tokenizer(params.model)
        except Exception:  # offline and not cached: fall back to the length assumption
            tokenizer = None
    rs = runs(params, tokenizer)
    n, kind = non_embedding_params(params.model.name)
    train_tokens = sum(r.train_examples * r.tokens_per_example for r in rs)
    eval_tokens = sum(r.eval_examples * r.tokens_per_example for r in rs)
    flops = sum(r.flops(n) for r in rs)
    lines = [f"plan for {params.source}: model {params.model.name} ({n / 1e6:.1f}M non-embedding parameters, {kind})"]
    for k in ("sweep", "intermediate", "transfer"):
        sel = [r for r in rs if r.kind == k]
        if sel:
            lines.append(f"  {k:<13} {len(sel):>6} runs  {sum(r.train_examples for r in sel):>14,} train examples")
    lines.append(f"  {'total':<13} {len(rs):>6} runs  {train_tokens:>14,.0f} train tokens  "
                 f"{eval_tokens:,.0f} eval tokens")
    lines.append(f"  compute: {flops:.3e} FLOPs (6·N·tokens train + 2·N·tokens eval)")
    lines += _gpu_hours(rs, n, gpu, mfu, flops)
    if measure:
        rate = calibrate()
        lines.append(f"  on this machine (calibrated: {rate / 1e9:.1f} GFLOP/s training): "
                     f"{_duration(flops / rate)} of training compute")
    return "\n".join(lines)


def _gpu_hours(rs: list[Run], n_params: int, gpu: str, mfu: float | None, flops: float) -> list[str]:
    """GPU-hours per training batch size: each run's FLOPs (its evaluations too) at the efficiency of its batch."""
    peak = GPU_PEAK_TFLOPS[gpu] * 1e12
    if mfu is not None:
        return [f"  on {gpu} at {mfu:.1%} of {GPU_PEAK_TFLOPS[gpu]:.0f} TFLOP/s bf16 (assumed: --mfu): "
                f"{flops / (peak * mfu) / 3600:,.2f} GPU-hours"]
    table = calibration()
    by_batch: dict[int, float] = {}
    for r in rs:
        by_batch[r.batch_size] = by_batch.get(r.batch_size, 0.0) + r.flops(n_params)
    lines, used, total = [], {}, 0.0
    for batch, batch_flops in sorted(by_batch.items()):
        eff = efficiency(gpu, batch, table)
        if eff is None:
            return [f"  on {gpu}: no measured efficiency in {CALIBRATION.name}; give --mfu"]
        hours = batch_flops / (peak * eff.mfu) / 3600
        total += hours
        lines.append(f"    batch {batch:>3}: {batch_flops:.2e} FLOPs at {eff.mfu:.2%} MFU: {hours:>10,.1f} GPU-hours "
                     f"({eff.how})")
        r = eff.row
        used[(r["gpu"], r["batch_size"])] = (
            f"    measured: {r['gpu']} batch {r['batch_size']}: {r['achieved_tflops']} TFLOP/s, {r['model']}, "
            f"{r['task']}, length {r['max_length']}, {r['setup']}; {r['date']}, {r['source']}")
    return [f"  on {gpu} ({GPU_PEAK_TFLOPS[gpu]:.0f} TFLOP/s dense bf16), at the measured efficiency of stilts' "
            f"loop ({CALIBRATION.name}): {total:,.1f} GPU-hours"] + lines + list(used.values())


def _duration(seconds: float) -> str:
    if seconds < 2 * 3600:
        return f"{seconds / 60:,.1f} minutes"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:,.1f} hours"
    return f"{seconds / 86400:,.0f} days"
