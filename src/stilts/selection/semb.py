"""SEmb (Poth et al., 2021): how similar two datasets are, from their mean sentence embedding.

Each sampled training example becomes one text: its input fields (never its label) joined by single
spaces, in the order of `INPUT_FIELDS` — a pair is "text_a text_b", a multiple-choice example
"context question choice1 choice2 …". The sentence encoder embeds each text (mean pooling over
tokens, or the pooling its sentence-transformers config names, then L2 normalisation, as
all-MiniLM-L6-v2 does); a task's embedding is the mean over its sample, and a candidate's score
for a target is the cosine of the two means. Task embeddings are cached under
`<data.features_dir>/semb/<task>/`, keyed by the prepared data's hash, the encoder, the
tokenizer, the sample and the truncation length.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stilts.errors import StiltsError
from stilts.io import atomic_write_json, read_json, sha256_file, sha256_text

# the record fields that hold a task type's input text, in reading order (labels and offsets excluded)
INPUT_FIELDS = {
    "classification": ("text_a", "text_b"),
    "regression": ("text_a", "text_b"),
    "span_pair": ("text_a", "text_b"),
    "grouped_binary": ("text_a", "text_b", "candidate"),
    "multiple_choice": ("context", "question", "choices"),
    "span_qa": ("context", "question"),
    "edge_probing": ("words",),
    "tagging": ("words",),
}
TEXT_VERSION = "1"  # bump when input_text changes: cached embeddings are keyed by it


def input_text(record: dict, task_type: str) -> str:
    parts = []
    for key in INPUT_FIELDS[task_type]:
        value = record.get(key)
        if isinstance(value, list):
            value = " ".join(str(v) for v in value)
        if value:
            parts.append(str(value))
    return " ".join(parts)


def pooling_of(model_dir: Path) -> str:
    """'mean' or 'cls': what a sentence-transformers model's Pooling config names (mean by default)."""
    cfg = model_dir / "1_Pooling" / "config.json"
    if not cfg.is_file():
        return "mean"
    modes = [k for k, v in read_json(cfg).items() if k.startswith("pooling_mode_") and v is True]
    if modes == ["pooling_mode_mean_tokens"]:
        return "mean"
    if modes == ["pooling_mode_cls_token"]:
        return "cls"
    raise StiltsError(f"{cfg}: pooling {modes} is not supported for rank.encoder (mean or cls tokens only)")


class Encoder:
    """A tokenizer and an encoder (loaded on first use), with a key that identifies them for caches:
    the weights' sha256 for a local model (a hub id: name and revision), the tokenizer, the pooling."""

    def __init__(self, name: str, mixed_precision: str = "auto", revision: str | None = None):
        import torch

        from stilts import modeling
        from stilts.config import ModelCfg
        from stilts.train import resolve_mixed_precision

        self.name, self.revision, self._model = name, revision, None
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        # inference in bf16 where the hardware runs it fast, as training does (`train.mixed_precision`)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolve_mixed_precision(mixed_precision))
        self.tokenizer = modeling.load_tokenizer(ModelCfg(name=name, revision=revision))
        self.path = Path(modeling.resolve_model_name(name))
        self.pooling = pooling_of(self.path) if self.path.is_dir() else "mean"

    @property
    def key(self) -> str:
        from stilts import data

        weights = sorted(self.path.glob("*.safetensors")) if self.path.is_dir() else []
        identity = [sha256_file(w) for w in weights] or [f"{self.name}@{self.revision or 'default'}"]
        return sha256_text(*identity, data.tokenizer_fingerprint(self.tokenizer), self.pooling, str(self.dtype))[:20]

    @property
    def model(self):
        if self._model is None:
            from stilts import modeling

            # the family's default: sdpa where it has it (faster than eager for inference here: bf16 on CPU
            # 17 vs 24 s per 16k tokens), else eager (DeBERTa-v2/v3)
            self._model = modeling.load_encoder(self.name, self.revision, None).eval().to(self.device)
        return self._model

    def embed(self, encodings: list[dict], batch_size: int, pooling: str | None = None):
        """One vector per encoded sequence (mean over its tokens, or its first token), in input order;
        batches are formed by length so little padding is computed."""
        import torch

        pooling = pooling or self.pooling
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i]["input_ids"]))
        out = np.zeros((len(encodings), self.model.config.hidden_size), dtype=np.float32)
        from stilts.modeling import encoder_inputs

        model = self.model
        keys = encoder_inputs(model)  # token types only for families that have several
        with torch.inference_mode(), torch.autocast(self.device, self.dtype, enabled=self.dtype is not None):
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = self.tokenizer.pad([{k: encodings[i][k] for k in keys if k in encodings[i]} for i in idx],
                                           padding=True, return_tensors="pt").to(self.device)
                hidden = model(**batch).last_hidden_state.float()
                if pooling == "cls":
                    vec = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).float()
                    vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                out[idx] = vec.cpu().numpy()
        return out


def task_embedding(params, task_name: str, encoder_: Encoder, encoder_key: str) -> np.ndarray:
    """The mean L2-normalised sentence embedding of the task's training sample (cached on disk)."""
    from stilts.selection.sample import ensure_prepared, training_sample
    from stilts.tasks import registry

    r = params.rank
    meta = ensure_prepared(params, task_name)
    key = sha256_text(meta["data_hash"], encoder_key, str(r.max_seq_length), str(r.sample_size), str(r.seed),
                      TEXT_VERSION)[:20]
    cache = params.path(params.data.features_dir) / "semb" / task_name / f"{key}.json"
    if cache.is_file():
        return np.asarray(read_json(cache)["embedding"], dtype=np.float64)
    task_type = registry.get(task_name).type
    texts = [input_text(rec, task_type) for rec in training_sample(params, task_name, r.sample_size, r.seed)]
    enc = encoder_.tokenizer(texts, truncation=True, max_length=r.max_seq_length)
    encodings = [{k: enc[k][i] for k in enc} for i in range(len(texts))]
    vectors = encoder_.embed(encodings, r.batch_size).astype(np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    mean = vectors.mean(axis=0)
    atomic_write_json(cache, {"task": task_name, "data_hash": meta["data_hash"], "encoder": encoder_.name,
                              "encoder_key": encoder_key, "examples": len(texts), "sample_size": r.sample_size,
                              "seed": r.seed, "max_seq_length": r.max_seq_length, "embedding": mean.tolist()})
    return mean


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def scores(params, targets: list[str], candidates: dict[str, list[str]]) -> dict[tuple[str, str], float]:
    """(target, candidate) → cosine similarity of their mean embeddings."""
    encoder_ = Encoder(params.rank.encoder, params.train.mixed_precision)
    tasks = dict.fromkeys([*targets, *(c for t in targets for c in candidates[t])])
    key = encoder_.key  # hashes the weights: once per ranking
    emb = {t: task_embedding(params, t, encoder_, key) for t in tasks}
    return {(t, c): cosine(emb[t], emb[c]) for t in targets for c in candidates[t]}
