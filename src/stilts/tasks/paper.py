"""The paper's task suite (Pruksachatkun et al., 2020, Table 1) by role: 11 + 10 + 25 = 46 tasks."""

SUITE = {
    "intermediate": ["commonsenseqa", "scitail", "cosmosqa", "socialiqa", "ccg", "hellaswag", "qasrl", "sst2", "qamr",
                     "qqp", "mnli"],
    "target": ["cb", "copa", "wsc", "rte", "multirc", "wic", "boolq", "commonsenseqa", "cosmosqa", "record"],
    "probe": ["ep_pos", "ep_ner", "ep_srl", "ep_coref", "ep_const", "ep_spr1", "ep_spr2", "ep_dpr", "ep_rel", "ep_ud",
              "se_sentlen", "se_wc", "se_treedepth", "se_topconst", "se_bshift", "se_tense", "se_subjnum",
              "se_objnum", "se_somo", "se_coordinv", "cola", "aj_wh", "aj_def", "aj_coord", "aj_eos"],
}
