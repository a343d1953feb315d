"""Task types. Each module keeps together what one kind of task needs:
`make_record` (source row → normalised record), `featurize` (records → token ids),
`collator`, `Head`, `loss` and `predict` (logits → predictions the metric reads).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from stilts.errors import unknown

TYPES = ("classification", "multiple_choice", "regression", "span_pair", "edge_probing", "tagging", "span_qa",
         "grouped_binary")


def get(name: str) -> ModuleType:
    if name not in TYPES:
        raise unknown("task type", name, TYPES)
    return importlib.import_module(f"stilts.tasktypes.{name}")
