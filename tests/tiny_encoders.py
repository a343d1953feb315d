"""Tiny randomly initialised encoders of each supported family, each with a tokenizer of its own kind trained
offline and saved as a local model folder (config.json, model.safetensors, tokenizer files).

family       model type   tokenizer (modelled on the family's released ones)
bert         bert         WordPiece, lowercased, [CLS]/[SEP], token types
electra      electra      WordPiece, lowercased (embedding size below the hidden size, as ELECTRA-small)
roberta      roberta      byte-level BPE, <s>/</s>, offsets trimmed of the leading space
xlm-roberta  xlm-roberta  SentencePiece Unigram (▁ word prefix), <s>/</s>
deberta-v3   deberta-v2   SentencePiece Unigram (▁ word prefix), [CLS]/[SEP], relative positions only
modernbert   modernbert   byte-level BPE whose offsets keep the leading space, [CLS]/[SEP], no token types
"""

from __future__ import annotations

from pathlib import Path

FAMILIES = ("bert", "electra", "roberta", "xlm-roberta", "deberta-v3", "modernbert")
SIZE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
MAX_POSITIONS = 128


def corpus() -> list[str]:
    """The tiny BERT's corpus (tests/conftest.py) and the hand-written texts of the tests that use these models."""
    from tests.conftest import _corpus

    lines = _corpus()
    lines += ["Do you want to come over to my place later? A political system with no place for groups.",
              "Mark told Pete many lies about himself, which Pete included in his book.",
              "The cat sat on the mat. It was happy. Pierre Vinken will join the board.",
              "A plane is taking off. An air plane is taking off. The cat chased the dog."]
    lines += [" ".join("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()[]/\\@-")] * 3
    return lines  # every character the tests' texts use: no unknown tokens


def _wordpiece():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(corpus(), trainers.WordPieceTrainer(
        vocab_size=600, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def _byte_level_bpe(special: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus(), trainers.BpeTrainer(
        vocab_size=700, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def _unigram(special: list[str], unk: str):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.Replace(" {2,}", " "), normalizers.NFKC()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(corpus(), trainers.UnigramTrainer(vocab_size=500, special_tokens=special, unk_token=unk))
    return tok


def build_tokenizer(family: str):
    """The family's tokenizer class around a `tokenizers` pipeline trained on `corpus()`."""
    from tokenizers import processors
    from transformers import (
        BertTokenizerFast,
        DebertaV2TokenizerFast,
        ElectraTokenizerFast,
        PreTrainedTokenizerFast,
        RobertaTokenizerFast,
        XLMRobertaTokenizerFast,
    )

    common = {"model_max_length": MAX_POSITIONS}
    if family in ("bert", "electra"):
        cls = BertTokenizerFast if family == "bert" else ElectraTokenizerFast
        return cls(tokenizer_object=_wordpiece(), do_lower_case=True, **common)
    if family == "roberta":
        tok = _byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                          add_prefix_space=False)
        return RobertaTokenizerFast(tokenizer_object=tok, add_prefix_space=False, **common)
    if family == "modernbert":  # ModernBERT's released tokenizer: template post-processing, untrimmed offsets
        special = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
        tok = _byte_level_bpe(special)
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]",
                                       sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]",
                                       model_input_names=["input_ids", "attention_mask"], **common)
    if family == "xlm-roberta":
        tok = _unigram(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<unk>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
        return XLMRobertaTokenizerFast(tokenizer_object=tok, **common)
    if family == "deberta-v3":
        tok = _unigram(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"], "[UNK]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
        return DebertaV2TokenizerFast(tokenizer_object=tok, do_lower_case=False, unk_id=3, **common)
    raise ValueError(family)


def build_config(family: str, tokenizer):
    from transformers import (
        BertConfig,
        DebertaV2Config,
        ElectraConfig,
        ModernBertConfig,
        RobertaConfig,
        XLMRobertaConfig,
    )

    ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    if family == "bert":
        return BertConfig(max_position_embeddings=MAX_POSITIONS, **SIZE, **ids)
    if family == "electra":
        return ElectraConfig(embedding_size=16, max_position_embeddings=MAX_POSITIONS, **SIZE, **ids)
    if family in ("roberta", "xlm-roberta"):  # positions start after the padding index, as released
        cls = RobertaConfig if family == "roberta" else XLMRobertaConfig
        return cls(max_position_embeddings=MAX_POSITIONS + 2, type_vocab_size=1, bos_token_id=0, eos_token_id=2,
                   **SIZE, **ids)
    if family == "deberta-v3":  # DeBERTa-v3's shape: relative attention, no absolute positions, no token types
        return DebertaV2Config(max_position_embeddings=MAX_POSITIONS, type_vocab_size=0, relative_attention=True,
                               position_buckets=32, norm_rel_ebd="layer_norm", share_att_key=True,
                               pos_att_type=["p2c", "c2p"], position_biased_input=False, **SIZE, **ids)
    if family == "modernbert":  # one global and one sliding-window layer; the window is shorter than the inputs
        return ModernBertConfig(max_position_embeddings=MAX_POSITIONS, local_attention=16,
                                global_attn_every_n_layers=2, cls_token_id=tokenizer.cls_token_id,
                                sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
                                eos_token_id=tokenizer.sep_token_id, **SIZE, **ids)
    raise ValueError(family)


def build(family: str, path: Path, mlm_head: bool = False) -> Path:
    """Save a tiny `family` encoder (random weights, seed 0) with its tokenizer in `path`."""
    import torch
    from transformers import AutoModel, AutoModelForMaskedLM

    tokenizer = build_tokenizer(family)
    tokenizer.save_pretrained(path)
    config = build_config(family, tokenizer)
    torch.manual_seed(0)
    model = (AutoModelForMaskedLM if mlm_head else AutoModel).from_config(config)
    model.save_pretrained(path, safe_serialization=True)
    return path
