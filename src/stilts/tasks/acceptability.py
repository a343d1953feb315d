"""Acceptability probes besides CoLA: the DNC function-word sets (fold 1 of 10) and BLiMP."""

from __future__ import annotations

import hashlib

from stilts.tasks.base import Task
from stilts.tasks.registry import register

# (task, DNC dataset name)
FUNCTION_WORDS = [("aj_wh", "whwords"), ("aj_def", "definiteness"), ("aj_coord", "coordinating-conjunctions"),
                  ("aj_eos", "eos")]


def blimp_pair(row: dict) -> dict:
    """A minimal pair as a 2-way choice; which side the acceptable sentence is on comes from a hash of
    the pair's id, so the label is balanced and fixed."""
    good_first = int(hashlib.sha256(str(row.get("idx")).encode()).hexdigest(), 16) % 2 == 0
    good, bad = row.get("sentence_good"), row.get("sentence_bad")
    return {**row, "choices": [good, bad] if good_first else [bad, good], "label": 0 if good_first else 1}


register(
    *(Task(name, "classification", "acc_f1", format="dnc_acceptability",
           files={"all": f"acceptability-{dnc}_data.json"}, fields={"text_a": "context", "label": "label"},
           labels=("unacceptable", "acceptable"), family="acceptability", roles=("probe",),
           train_size=400, dev_size=100,
           description=f"Function-word acceptability ({dnc}; DNC release, fold 1)")
      for name, dnc in FUNCTION_WORDS),
    Task("blimp", "multiple_choice", "accuracy", format="blimp_zip", files={"all": "BLiMP.zip"},
         fields={"choices": "choices"}, convert=blimp_pair, family="acceptability", roles=(),
         train_size=53_600, dev_size=13_400,
         description="BLiMP minimal pairs (67 paradigms): which sentence is acceptable? (1 in 5 pairs → dev)"),
)
