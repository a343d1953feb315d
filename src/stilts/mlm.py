"""Masked LM for RQ4 (forgetting): MLM loss before/after intermediate training, and MLM mixing.

Mixing follows the paper (T5-style examples-proportional mixing with a cap K): the intermediate
task and masked-LM get batches in proportion min(N_task, K) : min(N_mlm, K), interleaved
deterministically, with dynamic 15% masking (transformers' DataCollatorForLanguageModeling).
Both need a model whose checkpoint has a trained MLM head; without one the loss is not measured
(the analysis says so) and mixing is refused.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from stilts.errors import StiltsError


def load_mlm_model(name_or_path: str, revision: str | None, attn_implementation: str):
    """(masked-LM model, None) when the checkpoint has a trained MLM head, else (None, why not)."""
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging

    from stilts.modeling import resolve_model_name

    logging.set_verbosity_error()
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            resolve_model_name(name_or_path), revision=revision, trust_remote_code=False, use_safetensors=True,
            attn_implementation=attn_implementation, output_loading_info=True)
    except (OSError, ValueError) as e:
        return None, f"no masked-LM model could be loaded ({type(e).__name__})"
    prefix = model.base_model_prefix
    untrained = [k for k in info.get("missing_keys", []) if not k.startswith(prefix)]
    if untrained:
        return None, f"the checkpoint has no trained MLM head (missing {untrained[0]}, …)"
    return model, None


def corpus(params, n: int, seed: int = 0) -> list[str]:
    """Passages for MLM: `mlm.corpus` (one per line), else sentences from the generated suite's lexicon."""
    if params.mlm.corpus:
        path = params.path(params.mlm.corpus)
        if not path.is_file():
            raise StiltsError(f"mlm.corpus: '{path}' does not exist")
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if not lines:
            raise StiltsError(f"{path}: the MLM corpus is empty")
        return lines[:n] if n else lines
    from stilts.generate.lexicon import random_clause

    rng = random.Random(seed)
    return [" ".join(random_clause(rng, 0.6, 0.2).render() for _ in range(3)) for _ in range(n)]


def features(tokenizer, lines: list[str], max_length: int) -> list[dict]:
    enc = tokenizer(lines, truncation=True, max_length=max_length, return_special_tokens_mask=True)
    return [{k: enc[k][i] for k in ("input_ids", "attention_mask", "special_tokens_mask")} for i in range(len(lines))]


def collator(tokenizer, probability: float, seed: int | None = None):
    from transformers import DataCollatorForLanguageModeling

    inner = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability, pad_to_multiple_of=8, seed=seed)

    def collate(examples):
        batch = inner(examples)
        batch["mlm_labels"] = batch.pop("labels")
        return batch

    return collate


@torch.no_grad()
def loss(mlm_model, tokenizer, examples: list[dict], probability: float, batch_size: int = 32) -> float:
    """Mean masked-LM loss on a fixed masking of `examples` (same masks before and after training)."""
    collate = collator(tokenizer, probability, seed=1234)
    was_training = mlm_model.training
    mlm_model.eval()
    device = next(mlm_model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[i:i + batch_size]).items()}
        out = mlm_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        labels=batch["mlm_labels"])
        n = int((batch["mlm_labels"] != -100).sum())
        total, count = total + float(out.loss) * n, count + n
    mlm_model.train(was_training)
    return total / max(count, 1)


def mixing_ratio(n_task: int, n_mlm: int, cap: int) -> float:
    """MLM batches per task batch under examples-proportional mixing with cap K."""
    return min(n_mlm, cap) / max(min(n_task, cap), 1)


def batches(tokenizer, examples: list[dict], batch_size: int, probability: float, seed: int):
    """An endless stream of MLM batches (reshuffled each pass, dynamic masking)."""
    collate = collator(tokenizer, probability)
    rng = random.Random(seed)
    order = list(range(len(examples)))
    while True:
        rng.shuffle(order)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield collate([examples[j] for j in order[i:i + batch_size]])


def describe(path: Path | None) -> str:
    return str(path) if path else "generated sentences"
