"""Edge-probing tasks (Tenney et al., 2019) in jiant's JSON-lines format:
{"text": "...", "targets": [{"span1": [s, e], "span2": [s, e]?, "label": "X" | ["X", ...]}]}.
Files keep jiant's layout under data/raw/<task>/. OntoNotes- and PTB-derived sets are LDC-licensed."""

from stilts.tasks.base import Task
from stilts.tasks.registry import register

_LDC = "derived from LDC OntoNotes 5.0 (LDC2013T19): bring your own jiant edge-probing files"
# (task, train file, dev file, two spans?, train size, licence note, description)
EDGE_PROBING = [
    ("ep_pos", "ontonotes/const/pos/train.json", "ontonotes/const/pos/development.json", False, 116_000, _LDC,
     "part-of-speech of a token"),
    ("ep_ner", "ontonotes/ner/train.json", "ontonotes/ner/development.json", False, 60_000, _LDC,
     "named-entity type of a span"),
    ("ep_srl", "ontonotes/srl/train.json", "ontonotes/srl/development.json", True, 75_000, _LDC,
     "semantic role of an argument (span2) of a predicate (span1)"),
    ("ep_coref", "ontonotes/coref/train.json", "ontonotes/coref/development.json", True, 116_000, _LDC,
     "do two mentions corefer?"),
    ("ep_const", "ontonotes/const/nonterminal/train.json", "ontonotes/const/nonterminal/development.json",
     False, 116_000, _LDC, "constituent label of a span"),
    ("ep_spr1", "spr1/spr1.train.json", "spr1/spr1.dev.json", True, 3_800, "",
     "semantic proto-role properties (SPR1, multi-label)"),
    ("ep_spr2", "spr2/edges.train.json", "spr2/edges.dev.json", True, 2_200, "",
     "semantic proto-role properties (SPR2, multi-label)"),
    ("ep_dpr", "dpr/train.json", "dpr/dev.json", True, 2_000, "", "definite pronoun resolution: entailed or not"),
    ("ep_rel", "semeval/train.0.85.json", "semeval/dev.json", True, 6_800, "",
     "relation between two nominals (SemEval 2010 task 8)"),
    ("ep_ud", "dep_ewt/en_ewt-ud-train.json", "dep_ewt/en_ewt-ud-dev.json", True, 12_500, "",
     "dependency label between head (span1) and dependent (span2) (UD English Web Treebank)"),
]

register(*(Task(name, "edge_probing", "micro_f1", files={"train": train, "validation": dev},
                fields={"two_spans": True} if two else {}, family="edge_probing", roles=("probe",),
                train_size=size, licence_note=note, description=f"Edge probing: {desc}")
           for name, train, dev, two, size, note, desc in EDGE_PROBING))
