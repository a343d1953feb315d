"""GLUE tasks in their official tsv layout (train.tsv / dev.tsv)."""

from stilts.tasks.base import Task
from stilts.tasks.registry import register

_SPLITS = {"train": "train.tsv", "validation": "dev.tsv"}


def _snli_row(row: dict) -> dict | None:
    """SNLI marks pairs without a majority label with '-' (hub: -1); the official scripts drop them."""
    return None if str(row.get("gold_label", row.get("label"))) in ("-", "-1") else row


_GLUE = {"family": "glue", "format": "tsv", "files": _SPLITS}

register(
    Task("sst2", "classification", "accuracy", fields={"text_a": "sentence"}, labels=("0", "1"),
         hub="glue/sst2", roles=("intermediate",),
         train_size=67_349, dev_size=872, **_GLUE),
    Task("qqp", "classification", "acc_f1", fields={"text_a": "question1", "text_b": "question2",
                                                    "label": "is_duplicate"},
         labels=("0", "1"), hub="glue/qqp", roles=("intermediate",),
         train_size=363_846, dev_size=40_430, **_GLUE),
    Task("mnli", "classification", "accuracy", fields={"text_a": "sentence1", "text_b": "sentence2",
                                                       "label": "gold_label"},
         labels=("entailment", "neutral", "contradiction"), hub="glue/mnli", roles=("intermediate",),
         family="glue", format="tsv", files={"train": "train.tsv", "validation": "dev_matched.tsv"},
         hub_splits={"train": "train", "validation": "validation_matched"}, train_size=392_702, dev_size=9_815),
    Task("cola", "classification", "mcc", format="tsv_noheader", fields={"text_a": "3", "label": "1"},
         labels=("0", "1"), hub="glue/cola", roles=("probe",), family="glue", files=_SPLITS,
         train_size=8_551, dev_size=1_043),
    Task("mrpc", "classification", "acc_f1", fields={"text_a": "#1 String", "text_b": "#2 String",
                                                     "label": "Quality"},
         labels=("0", "1"), hub="glue/mrpc", roles=(),
         train_size=3_668, dev_size=408, **_GLUE),
    Task("qnli", "classification", "accuracy", fields={"text_a": "question", "text_b": "sentence"},
         labels=("entailment", "not_entailment"), hub="glue/qnli", roles=(),
         train_size=104_743, dev_size=5_463, **_GLUE),
    Task("wnli", "classification", "accuracy", fields={"text_a": "sentence1", "text_b": "sentence2"},
         labels=("0", "1"), hub="glue/wnli", roles=(),
         train_size=635, dev_size=71, **_GLUE),
    Task("stsb", "regression", "pearson_spearman", fields={"text_a": "sentence1", "text_b": "sentence2",
                                                           "label": "score"},
         hub="glue/stsb", roles=(), train_size=5_749, dev_size=1_500, **_GLUE),
    Task("snli", "classification", "accuracy", fields={"text_a": "sentence1", "text_b": "sentence2",
                                                       "label": "gold_label"},
         labels=("entailment", "neutral", "contradiction"), convert=_snli_row, hub="snli", roles=(),
         hub_fields={"text_a": "premise", "text_b": "hypothesis", "label": "label"},
         train_size=550_152, dev_size=10_000, **_GLUE),
)
