"""The side signals the prior and hybrid read where they exist, and skip where they do not.

A task contributes semb (its task embedding, semb.task_embedding, cached) when it is a registered
task whose data is there: generated, already prepared, or its official files under `data.raw_dir`.
A (target, candidate) pair contributes logme when, in addition, the candidate has an intermediate
checkpoint (`models/intermediate/<candidate>/r<rank.restart>/`) and logme can score the target's type.
Absent data is not an error here (several of the paper's tasks need licensed data): the pair simply
has no such signal, and the output says so.
"""

from __future__ import annotations

import numpy as np

from stilts.selection.semb import cosine


def has_data(params, task: str) -> bool:
    from stilts import data
    from stilts.tasks import registry

    if task not in registry.names():
        return False
    t = registry.get(task)
    if t.generator or (params.path(params.data.processed_dir) / task / "meta.json").is_file():
        return True
    return all(p.is_file() for p in data.task_files(params, t).values())


def has_checkpoint(params, task: str) -> bool:
    from stilts.cells import checkpoint_dir

    return (checkpoint_dir(params, task, params.rank.restart) / "stilts.json").is_file()


def embeddings(params, tasks) -> dict[str, np.ndarray]:
    """task → semb task embedding, for the tasks whose data is there (the encoder loads only if needed)."""
    from stilts.selection import semb

    present = [t for t in dict.fromkeys(tasks) if has_data(params, t)]
    if not present:
        return {}
    encoder = semb.Encoder(params.rank.encoder, params.train.mixed_precision)
    key = encoder.key
    return {t: semb.task_embedding(params, t, encoder, key) for t in present}


def semb_pairs(emb: dict[str, np.ndarray], pairs: dict[str, list[str]]) -> dict[tuple[str, str], float]:
    return {(t, c): cosine(emb[t], emb[c]) for t, cs in pairs.items() if t in emb for c in cs if c in emb}


def logme_pairs(params, pairs: dict[str, list[str]]) -> dict[tuple[str, str], float]:
    """LogME for the pairs whose target has data of a type logme scores and whose candidate has a checkpoint."""
    from stilts.selection import logme
    from stilts.selection.sample import ensure_prepared
    from stilts.tasks import registry

    usable = {}
    for t, cs in pairs.items():
        if has_data(params, t) and registry.get(t).type in logme.SUPPORTED:
            with_ckpt = [c for c in cs if has_checkpoint(params, c)]
            if with_ckpt:
                ensure_prepared(params, t)
                usable[t] = with_ckpt
    return logme.scores(params, list(usable), usable) if usable else {}


def gather(params, pairs: dict[str, list[str]], tasks_for_embedding) -> tuple[dict, dict]:
    """(signals {"semb": pairs, "logme": pairs}, embeddings) over `pairs` (target → candidates)."""
    emb = embeddings(params, [*tasks_for_embedding, *pairs, *(c for cs in pairs.values() for c in cs)])
    return {"semb": semb_pairs(emb, pairs), "logme": logme_pairs(params, pairs)}, emb
