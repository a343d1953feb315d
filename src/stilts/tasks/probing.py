"""SentEval probing tasks (Conneau et al., 2018): `data/probing/<name>.txt`, one file for all splits
(`tr|va|te<TAB>label<TAB>sentence`). Put the file in data/raw/<task>/ under its official name."""

from stilts.tasks.base import Task
from stilts.tasks.registry import register

# (task, official file, labels; () = open label set taken from the train split)
SENTEVAL = [
    ("se_sentlen", "sentence_length.txt", ("0", "1", "2", "3", "4", "5")),
    ("se_wc", "word_content.txt", ()),  # 1,000 target words
    ("se_treedepth", "tree_depth.txt", ("5", "6", "7", "8", "9", "10", "11")),
    ("se_topconst", "top_constituents.txt", ()),  # 19 frequent top-constituent sequences + OTHER
    ("se_bshift", "bigram_shift.txt", ("O", "I")),
    ("se_tense", "past_present.txt", ("PAST", "PRES")),
    ("se_subjnum", "subj_number.txt", ("NN", "NNS")),
    ("se_objnum", "obj_number.txt", ("NN", "NNS")),
    ("se_somo", "odd_man_out.txt", ("O", "C")),
    ("se_coordinv", "coordination_inversion.txt", ("O", "I")),
]

register(*(Task(name, "classification", "accuracy", format="senteval", files={"all": f"data/probing/{fname}"},
                fields={"text_a": "sentence"}, labels=labels, family="senteval", roles=("probe",),
                train_size=100_000, dev_size=10_000, description=f"SentEval probing: {fname[:-4]}")
           for name, fname, labels in SENTEVAL))
