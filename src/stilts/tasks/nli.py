"""Entailment tasks outside GLUE/SuperGLUE."""

from stilts.tasks.base import Task
from stilts.tasks.registry import register

register(
    Task("scitail", "classification", "accuracy", format="tsv_noheader",
         files={"train": "tsv_format/scitail_1.0_train.tsv", "validation": "tsv_format/scitail_1.0_dev.tsv"},
         fields={"text_a": "0", "text_b": "1", "label": "2"}, labels=("entails", "neutral"),
         hub="allenai/scitail#tsv_format", hub_fields={"text_a": "premise", "text_b": "hypothesis", "label": "label"},
         family="nli", roles=("intermediate",), train_size=23_596, dev_size=1_304,
         description="SciTail: science-question entailment (premise, hypothesis, entails|neutral)"),
)
