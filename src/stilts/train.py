"""The training loop (Accelerate): AdamW + linear warm-up/decay, mixed precision, gradient
accumulation, evaluation every N steps or each epoch, best state kept.

Runs unchanged on one CPU, one GPU, or several processes under `accelerate launch`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader

from stilts import resume, step, stop


@dataclass
class TrainResult:
    best: dict  # dev metrics of the best evaluation (full dev set)
    best_step: int
    steps: int
    train_seconds: float
    train_examples: int
    train_tokens: int
    best_state: dict | None = None
    best_predictions: list | None = None  # dev predictions of the best evaluation (with keep_predictions)
    stopped_early: bool = False
    history: list = field(default_factory=list)
    final_eval_seconds: float = 0.0  # the full-dev evaluation after a capped-dev run
    compile_tags: dict = field(default_factory=dict)  # stilts.compile: on, off, fallback (and its reason)


def resolve_mixed_precision(setting: str) -> str:
    """'auto' → bf16 where the hardware runs it fast (CUDA with bf16, CPUs with AMX/AVX512-BF16 that oneDNN
    may use), else fp32."""
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    cpu = torch.cpu
    fast = getattr(cpu, "_is_amx_tile_supported", lambda: False)() or \
        getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
    return "bf16" if fast and not _onednn_capped_below_bf16() else "no"


# oneDNN ISAs without bf16 instructions: a process capped to one of them (ONEDNN_MAX_CPU_ISA, the older
# DNNL_MAX_CPU_ISA) runs bf16 matrix products emulated, however new the CPU
_ISAS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def _onednn_capped_below_bf16() -> bool:
    import os

    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    return cap.strip().upper() in _ISAS_WITHOUT_BF16


def make_accelerator(settings, cpu: bool = False):
    from accelerate import Accelerator

    return Accelerator(mixed_precision=resolve_mixed_precision(settings.mixed_precision),
                       gradient_accumulation_steps=settings.grad_accum, cpu=cpu)


def pad_multiple(device_type: str) -> int:
    """Dynamic padding on CUDA rounds a batch's length up to a multiple of 8 (tensor-core shapes); elsewhere a
    padded position costs as much as a real token, so a batch is padded to its longest sequence: on the default
    study's short sentences rounding up added 17–43% to the positions trained on (benchmarks/padding.py)."""
    return 8 if device_type == "cuda" else 1


def _optimizer(model, settings, device_type: str):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # fused AdamW: one kernel for all parameters (CPU since torch 2.4, and CUDA)
        return torch.optim.AdamW(groups, lr=settings.lr, fused=device_type in ("cpu", "cuda"))
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=settings.lr)


def _train_loader(ds, settings, collate, seed: int):
    """A loader whose order comes from its own generator (re-seeded per epoch), never the global RNG."""
    g = torch.Generator().manual_seed(seed)
    if settings.group_by_length and "length" in ds.column_names:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        sampler = LengthGroupedSampler(settings.batch_size, lengths=list(ds["length"]), generator=g)
    else:
        sampler = torch.utils.data.RandomSampler(ds, generator=g)
    loader = DataLoader(ds.remove_columns(_side_columns(ds)),
                        batch_size=settings.batch_size, sampler=sampler, collate_fn=collate, drop_last=False,
                        generator=torch.Generator().manual_seed(seed))
    return loader, g


def _side_columns(ds) -> list[str]:
    """Columns the model never sees: lengths (for batching) and references kept for scoring."""
    return [c for c in ds.column_names if c == "length" or c.startswith("ref_")]


@dataclass
class EvalSet:
    loader: DataLoader
    order: np.ndarray | None  # loader position → dataset row
    refs: dict  # ref_* columns, in dataset order


def eval_loader(ds, settings, collate) -> EvalSet:
    refs = {c: ds[c] for c in ds.column_names if c.startswith("ref_")}
    order = None
    if "length" in ds.column_names:
        order = np.argsort(ds["length"], kind="stable")[::-1]  # longest first: least padding when sorted
        ds = ds.select(order.tolist())
    loader = DataLoader(ds.remove_columns(_side_columns(ds)), batch_size=settings.eval_batch_size, shuffle=False,
                        collate_fn=collate, generator=torch.Generator().manual_seed(0))
    return EvalSet(loader, order, refs)


def _optimizer_step(model, accelerator, optimizer, scheduler, settings) -> None:
    """Clip, step and zero; with gradient accumulation the prepared optimizer only steps on sync."""
    if accelerator.sync_gradients and settings.max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
    optimizer.step()
    if accelerator.sync_gradients:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def _mlm_step(model, batch, accelerator, optimizer, scheduler, settings):
    """One masked-LM batch: a full optimizer step of its own (called after a synced task step)."""
    batch = {k: v.to(accelerator.device) for k, v in batch.items()}
    with accelerator.autocast():
        loss = model(batch)
    accelerator.backward(loss)
    _optimizer_step(model, accelerator, optimizer, scheduler, settings)
    return loss.detach()


@torch.no_grad()
def evaluate(model, dev: EvalSet, accelerator, task) -> tuple[dict, np.ndarray]:
    """The metrics on `dev`, and the predictions (the task type's `predict`) in dataset order."""
    from stilts import metrics
    from stilts.tasktypes.common import stack

    model.eval()
    preds, golds = [], []
    tt = accelerator.unwrap_model(model).tasktype
    for batch in dev.loader:
        with accelerator.autocast():
            logits = model(batch)
        p, g = tt.predict(logits, batch), batch["labels"]
        if p.dim() > 1:  # per-token / per-target outputs: equal widths across processes before gathering
            p = accelerator.pad_across_processes(p, dim=1, pad_index=-1)
            g = accelerator.pad_across_processes(g, dim=1, pad_index=-1)
        p, g = accelerator.gather_for_metrics((p, g))
        preds.append((p.float() if p.is_floating_point() else p).cpu().numpy())
        golds.append(g.cpu().numpy())
    model.train()
    pred, gold = stack(preds), stack(golds)
    if dev.order is not None:  # back to dataset order, where the refs are
        pred[dev.order], gold[dev.order] = pred.copy(), gold.copy()
    out = metrics.compute(task.metric, pred, gold, dev.refs)
    if pred.ndim == 1 and not np.issubdtype(pred.dtype, np.floating):
        out["pred_classes"] = int(len(np.unique(pred)))
    out["examples"] = int(len(gold))
    return out, pred


@dataclass
class _Loop:
    """What the training loop works with. `L` is its position and running totals: everything a resumed run
    needs besides tensors (saved with the training state under `state_dir`)."""
    model: object
    task: object
    settings: object
    accelerator: object
    optimizer: object
    scheduler: object
    step_loss: object
    dev: EvalSet
    collate: object  # with the padding buckets of a compiled step
    total: int  # optimizer steps
    eval_every: int
    mlm_batches: object
    mlm_ratio: float
    log: object = None  # metrics, step → None
    log_flush: object = lambda: None  # waits until what `log` queued is stored
    after_save: object = lambda: None  # after each save of the training state (`remote_state.uploader`)
    keep_best_state: bool = False
    keep_predictions: bool = False
    L: dict = field(default_factory=lambda: {
        "epoch": 0, "batch": 0, "step": 0, "examples": 0, "tokens": 0, "loss_sum": 0.0, "loss_n": 0, "best": None,
        "best_step": 0, "stale": 0, "history": [], "mlm_credit": 0.0, "mlm_batches": 0, "mlm_loss_sum": 0.0,
        "seconds": 0.0})
    best_state: dict | None = None
    state_dir: object = None  # where the resumable state goes (single-process runs)
    state_extra: dict = field(default_factory=dict)
    save_every: int = 0
    start: float = 0.0
    last_save: float = 0.0


def _prepare(model, task, settings, train_ds, dev_during, collate, accelerator, seed: int, mlm_batches,
             mlm_ratio: float):
    """Loaders, optimizer, schedule and the step's loss, prepared by Accelerate: (loop, train loader, the
    generator its sampler draws from)."""
    from transformers import get_linear_schedule_with_warmup

    options = step.step_options(settings, accelerator)
    if hasattr(collate, "with_padding"):
        collate = collate.with_padding(options.buckets, pad_multiple(accelerator.device.type))
    train_loader, sampler_generator = _train_loader(train_ds, settings, collate, seed)
    dev = eval_loader(dev_during, settings, collate)
    optimizer = _optimizer(model, settings, accelerator.device.type)
    model, optimizer, train_loader, dev.loader = accelerator.prepare(model, optimizer, train_loader, dev.loader)
    # counted on the prepared loader: under several processes each one sees its shard of every epoch
    steps_per_epoch = math.ceil(len(train_loader) / settings.grad_accum)
    total = settings.max_steps or steps_per_epoch * settings.epochs
    sched_total = math.ceil(total * (1 + mlm_ratio)) if mlm_batches is not None else total
    # not passed to prepare(): it is stepped once per optimizer step, on every process
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * sched_total), sched_total)
    tt = accelerator.unwrap_model(model).tasktype
    step_loss = step.step_loss(model, tt, accelerator, options.compiled)
    eval_every = settings.eval_every or steps_per_epoch
    loop = _Loop(model, task, settings, accelerator, optimizer, scheduler, step_loss, dev, collate, total,
                 eval_every, mlm_batches, mlm_ratio)
    return loop, train_loader, sampler_generator


def _restore(loop: _Loop) -> None:
    """Continue from the training state a killed run saved, when there is one."""
    restored = resume.load(loop.state_dir, loop.accelerator.unwrap_model(loop.model), loop.optimizer, loop.scheduler)
    if restored is not None:
        loop.L, loop.best_state = restored
        if loop.mlm_batches is not None:
            for _ in range(loop.L["mlm_batches"]):
                next(loop.mlm_batches)


def _micro_batch(loop: _Loop, batch, totals: dict) -> bool:
    """Forward, backward and (on sync) an optimizer step, then the MLM batches due; whether it stepped."""
    L, accelerator = loop.L, loop.accelerator
    with accelerator.accumulate(loop.model):
        loss = loop.step_loss(batch)  # forward and backward
        _optimizer_step(loop.model, accelerator, loop.optimizer, loop.scheduler, loop.settings)
    L["batch"] += 1
    totals["loss_sum"] += loss.detach()
    L["loss_n"] += 1
    if loop.mlm_batches is not None and accelerator.sync_gradients:
        L["mlm_credit"] += loop.mlm_ratio
        while L["mlm_credit"] >= 1:  # examples-proportional mixing, interleaved deterministically
            L["mlm_credit"] -= 1
            L["mlm_batches"] += 1
            totals["mlm_loss_sum"] += _mlm_step(loop.model, next(loop.mlm_batches), accelerator, loop.optimizer,
                                                loop.scheduler, loop.settings)
    L["examples"] += batch["labels"].shape[0]
    totals["tokens"] += batch["attention_mask"].sum()
    if not accelerator.sync_gradients:
        return False
    L["step"] += 1
    return True


def _log_and_evaluate(loop: _Loop, totals: dict) -> bool:
    """Log the train loss every `log_every` steps; evaluate every `eval_every` (and at the end), keeping the
    best evaluation. Whether it evaluated."""
    L, step, settings = loop.L, loop.L["step"], loop.settings
    if step % settings.log_every == 0:
        extra = {"train_mlm_loss_sum": totals["mlm_loss_sum"].item()} if loop.mlm_batches is not None else {}
        loop.log({"train_loss": (totals["loss_sum"] / L["loss_n"]).item(), "lr": loop.scheduler.get_last_lr()[0],
                  **extra}, step)
        totals["loss_sum"].zero_()
        L["loss_n"] = 0
    if not (step % loop.eval_every == 0 or step == loop.total):
        return False
    resume.fault("eval")
    m, pred = evaluate(loop.model, loop.dev, loop.accelerator, loop.task)
    L["history"].append({"step": step, **m})
    loop.log({f"dev_{k}": v for k, v in m.items()}, step)
    L["stale"] += 1
    metric = loop.task.metric
    if L["best"] is None or m[metric] > L["best"][metric]:
        L["best"], L["best_step"], L["stale"] = m, step, 0
        if loop.keep_predictions:  # in the loop state, so a resumed run still has them
            L["best_predictions"] = pred.tolist()
        if loop.keep_best_state:
            unwrapped = loop.accelerator.unwrap_model(loop.model)
            loop.best_state = {k: v.detach().to("cpu", copy=True) for k, v in unwrapped.state_dict().items()}
    return True


def _save_if_due(loop: _Loop, evaluated: bool, totals: dict) -> None:
    """The resumable state: every `save_every` steps, and at evaluations at most every `save_interval_s`
    seconds (short runs are cheaper to redo than to save); never at the end, whose result follows."""
    now = time.perf_counter()
    due = (loop.save_every and loop.L["step"] % loop.save_every == 0) or \
        (evaluated and now - loop.last_save >= loop.settings.save_interval_s)
    if due:
        _save(loop, totals)


def _save(loop: _Loop, totals: dict) -> None:
    if loop.state_dir is None:
        return
    loop.log_flush()  # the steps' metrics are stored before the state that follows them
    loop.L.update(loss_sum=float(totals["loss_sum"]), mlm_loss_sum=float(totals["mlm_loss_sum"]),
                  tokens=int(totals["tokens"]), seconds=time.perf_counter() - loop.start)
    resume.save(loop.state_dir, loop.accelerator.unwrap_model(loop.model), loop.optimizer, loop.scheduler,
                {**loop.L, **loop.state_extra}, loop.best_state)
    loop.after_save()
    loop.last_save = time.perf_counter()


def _train_steps(loop: _Loop, train_loader, sampler_generator, seed: int, totals: dict, bar) -> None:
    """Epochs of optimizer steps, until the last step or early stopping (`patience` evaluations without
    improvement)."""
    L, settings = loop.L, loop.settings
    if L["step"] >= loop.total:
        return
    while True:
        sampler_generator.manual_seed(seed + L["epoch"])  # each epoch's order depends on (seed, epoch) only
        loader = loop.accelerator.skip_first_batches(train_loader, L["batch"]) if L["batch"] else train_loader
        for batch in loader:
            if not _micro_batch(loop, batch, totals):
                continue  # accumulating gradients
            bar.update(1)
            resume.fault("train_step")
            evaluated = _log_and_evaluate(loop, totals)
            if L["step"] >= loop.total or (settings.patience and L["stale"] >= settings.patience):
                return
            _save_if_due(loop, evaluated, totals)
            if stop.pending():  # a stop signal: train() saves this step's state and stops
                return
        L["epoch"] += 1
        L["batch"] = 0


def train(model, task, settings, train_ds, dev_ds, collate, accelerator, seed: int, log=None,
          keep_best_state: bool = False, progress: bool = True, mlm_batches=None, mlm_ratio: float = 0.0,
          state_dir=None, state_extra: dict | None = None, save_every: int = 0,
          keep_predictions: bool = False, log_flush=None, after_save=None) -> TrainResult:
    """Fine-tune `model` on `train_ds`, evaluating on `dev_ds`; return the best evaluation.

    With `state_dir`, the full training state is saved at every evaluation (and every `save_every`
    steps), and a run that finds a state there resumes from it."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    set_seed(seed)
    dev_during = dev_ds
    if settings.max_eval_examples and len(dev_ds) > settings.max_eval_examples:
        dev_during = dev_ds.select(range(settings.max_eval_examples))
        keep_best_state = True  # the final full-dev evaluation must score the best state
    loop, train_loader, sampler_generator = _prepare(model, task, settings, train_ds, dev_during, collate,
                                                     accelerator, seed, mlm_batches, mlm_ratio)
    loop.log = log or (lambda metrics, step: None)
    loop.log_flush = log_flush or (lambda: None)
    loop.after_save = after_save or (lambda: None)
    loop.keep_best_state, loop.keep_predictions = keep_best_state, keep_predictions
    if state_dir is not None and accelerator.num_processes == 1:
        loop.state_dir, loop.state_extra, loop.save_every = state_dir, state_extra or {}, save_every
        _restore(loop)
    L = loop.L
    totals = {"loss_sum": torch.tensor(L["loss_sum"], device=accelerator.device),
              "mlm_loss_sum": torch.tensor(L["mlm_loss_sum"], device=accelerator.device),
              "tokens": torch.tensor(L["tokens"], dtype=torch.long, device=accelerator.device)}  # on device: no sync
    loop.start, loop.last_save = time.perf_counter() - L["seconds"], time.perf_counter()
    loop.model.train()
    with tqdm(total=loop.total, initial=L["step"], desc=f"{task.name}", mininterval=2.0, leave=False,
              disable=not (progress and accelerator.is_local_main_process)) as bar:
        with stop.deferred():  # a stop signal lets the current step finish, then the state is saved
            _train_steps(loop, train_loader, sampler_generator, seed, totals, bar)
            if stop.pending():
                _save(loop, totals)
                stop.raise_if_pending()
    seconds = time.perf_counter() - loop.start
    best, final_eval = L["best"], time.perf_counter()
    if dev_during is not dev_ds:  # the paper: capped dev set while training, full dev set at the end
        if loop.best_state is not None:
            accelerator.unwrap_model(loop.model).load_state_dict(loop.best_state)
        full = eval_loader(dev_ds, settings, loop.collate)
        full.loader = accelerator.prepare(full.loader)
        best, pred = evaluate(loop.model, full, accelerator, task)
        if keep_predictions:
            L["best_predictions"] = pred.tolist()
    return TrainResult(best=best, best_step=L["best_step"], steps=L["step"], train_seconds=seconds,
                       final_eval_seconds=time.perf_counter() - final_eval, stopped_early=L["step"] < loop.total,
                       train_examples=L["examples"], train_tokens=int(totals["tokens"].item()),
                       best_state=loop.best_state, history=L["history"], best_predictions=L.get("best_predictions"),
                       compile_tags=loop.step_loss.tags)
