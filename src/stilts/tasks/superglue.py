"""SuperGLUE tasks in their official jsonl layout (train.jsonl / val.jsonl)."""

from stilts.tasks.base import Task
from stilts.tasks.registry import register

_SPLITS = {"train": "train.jsonl", "validation": "val.jsonl"}
_SG = {"family": "superglue", "files": _SPLITS, "hub_splits": {"train": "train", "validation": "validation"}}


def copa_question(row: dict) -> dict:
    """COPA asks for a cause or an effect; spell the question out for the encoder."""
    asks = row.get("question")
    return {**row, "question_text": "What was the cause?" if asks == "cause" else "What happened as a result?"}


COPA_FIELDS = {"context": "premise", "question": "question_text", "choices": ["choice1", "choice2"]}

register(
    Task("rte", "classification", "accuracy", fields={"text_a": "premise", "text_b": "hypothesis"},
         labels=("entailment", "not_entailment"), hub="super_glue/rte", roles=("target",),
         train_size=2_490, dev_size=277, **_SG),
    Task("cb", "classification", "macro_f1", fields={"text_a": "premise", "text_b": "hypothesis"},
         labels=("entailment", "contradiction", "neutral"), hub="super_glue/cb", roles=("target",),
         train_size=250, dev_size=56, **_SG),
    Task("boolq", "classification", "acc_f1", fields={"text_a": "passage", "text_b": "question"},
         labels=("false", "true"), hub="super_glue/boolq", roles=("target",),
         train_size=9_427, dev_size=3_270, **_SG),
    Task("copa", "multiple_choice", "accuracy", fields=COPA_FIELDS, convert=copa_question,
         hub="super_glue/copa", roles=("target",),
         train_size=400, dev_size=100, **_SG),
)
