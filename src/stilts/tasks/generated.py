"""The offline generated suite (stilts.generate.suite documents the skills each task tests).

Each generated task uses the same format and reader as its real counterpart.
"""

from stilts.tasks.base import Task
from stilts.tasks.registry import register
from stilts.tasks.superglue import COPA_FIELDS, copa_question

_GEN = {"family": "generated"}
_SENTEVAL = dict(type="classification", metric="accuracy", format="senteval", fields={"text_a": "sentence"},
                 roles=("probe",), **_GEN)

register(
    Task("syn_nli", "classification", "accuracy", files={"train": "train.jsonl", "validation": "val.jsonl"},
         fields={"text_a": "premise", "text_b": "hypothesis"}, labels=("entailment", "contradiction", "neutral"),
         generator="syn_nli", roles=("intermediate",),
         description="3-way NLI: content matching and negation (CB format)", **_GEN),
    Task("syn_sentiment", "classification", "accuracy", format="tsv",
         files={"train": "train.tsv", "validation": "dev.tsv"}, fields={"text_a": "sentence"}, labels=("0", "1"),
         generator="syn_sentiment", roles=("intermediate",),
         description="opinion polarity with negation (SST-2 format)", **_GEN),
    Task("syn_rte", "classification", "accuracy", files={"train": "train.jsonl", "validation": "val.jsonl"},
         fields={"text_a": "premise", "text_b": "hypothesis"}, labels=("entailment", "not_entailment"),
         generator="syn_rte", roles=("target",),
         description="2-way entailment over two-clause premises (RTE format)", **_GEN),
    Task("syn_copa", "multiple_choice", "accuracy", files={"train": "train.jsonl", "validation": "val.jsonl"},
         fields=COPA_FIELDS, convert=copa_question,
         generator="syn_copa", roles=("target",),
         description="opinion → reaction, cause or effect (COPA format)", **_GEN),
    Task("syn_tense", labels=("PAST", "PRES"), files={"all": "syn_tense.txt"}, generator="syn_tense",
         description="tense of the main verb (SentEval format)", **_SENTEVAL),
    Task("syn_subjnum", labels=("NN", "NNS"), files={"all": "syn_subjnum.txt"}, generator="syn_subjnum",
         description="number of the subject (SentEval format)", **_SENTEVAL),
    Task("syn_bshift", labels=("O", "I"), files={"all": "syn_bshift.txt"}, generator="syn_bshift",
         description="were two adjacent words swapped? (SentEval format)", **_SENTEVAL),
    Task("syn_sentlen", labels=("0", "1", "2", "3"), files={"all": "syn_sentlen.txt"}, generator="syn_sentlen",
         description="sentence length bin (SentEval format)", **_SENTEVAL),
)
