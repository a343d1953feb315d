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


def _word_offsets(text: str) -> list[tuple[int, int]]:
    import re

    return [m.span() for m in re.finditer(r"\S+", text)]


def wsc_row(row: dict) -> dict:
    """WSC: word indices of the noun phrase (span1) and the pronoun (span2) → character spans."""
    t = row.get("target") or row  # official files nest the spans in "target"; the hub has them flat
    words = _word_offsets(row.get("text") or "")
    spans = []
    for k in ("span1", "span2"):
        i, n = t.get(f"{k}_index"), len(str(t.get(f"{k}_text") or "").split())
        if not isinstance(i, int) or not 0 <= i < len(words) or i + max(n, 1) > len(words):
            return {**row, "text_a": row.get("text"), k: [0, -1, -1]}  # make_record reports it, with the line
        spans.append([0, words[i][0], words[i + max(n, 1) - 1][1]])
    return {**row, "text_a": row.get("text"), "span1": spans[0], "span2": spans[1]}


def wic_row(row: dict) -> dict:
    return {**row, "text_a": row.get("sentence1"), "text_b": row.get("sentence2"),
            "span1": [0, row.get("start1"), row.get("end1")], "span2": [1, row.get("start2"), row.get("end2")]}


def multirc_rows(row: dict) -> list[dict]:
    """One record per answer option, grouped by question (official: passage → questions → answers)."""
    if "passage" not in row:  # the hub's flat layout: one answer option per row
        i = row.get("idx") or {}
        q = f"{i.get('paragraph')}-{i.get('question')}"
        return [{"idx": f"{q}-{i.get('answer')}", "text_a": row.get("paragraph"), "group": q,
                 "text_b": f"{row.get('question')} {row.get('answer')}", "label": row.get("label")}]
    passage = row["passage"] or {}
    out = []
    for q in passage.get("questions") or []:
        group = f"{row.get('idx')}-{q.get('idx')}"
        for a in q.get("answers") or []:
            out.append({"idx": f"{group}-{a.get('idx')}", "text_a": passage.get("text"), "group": group,
                        "text_b": f"{q.get('question')} {a.get('text')}", "label": a.get("label")})
    return out


def record_rows(row: dict) -> list[dict]:
    """One record per (query, entity candidate); the placeholder is filled with the candidate."""
    if "qas" not in row:  # the hub's layout: one query per row, entities and answers as texts
        i = row.get("idx") or {}
        queries = [(f"{i.get('passage')}-{i.get('query')}", row.get("query"), list(row.get("answers") or []))]
        text, entities = row.get("passage") or "", list(dict.fromkeys(row.get("entities") or []))
    else:
        passage = row.get("passage") or {}
        text = passage.get("text") or ""
        # official entity offsets are inclusive at both ends
        entities = list(dict.fromkeys(text[e["start"]:e["end"] + 1] for e in passage.get("entities") or []))
        queries = [(f"{row.get('idx')}-{q.get('idx')}", q.get("query"), [a.get("text") for a in q.get("answers") or []])
                   for q in row.get("qas") or []]
    text = text.replace("@highlight\n", "- ")
    out = []
    for group, query, answers in queries:
        for k, entity in enumerate(entities):
            out.append({"idx": f"{group}-{k}", "text_a": text, "group": group, "candidate": entity,
                        "text_b": str(query).replace("@placeholder", entity), "answers": answers,
                        "label": int(entity in answers)})
    return out


register(
    Task("wsc", "span_pair", "accuracy", convert=wsc_row, labels=("false", "true"), hub="super_glue/wsc.fixed",
         roles=("target",), train_size=554, dev_size=104,
         description="Winograd schema: does the pronoun (span2) refer to the noun phrase (span1)?", **_SG),
    Task("wic", "span_pair", "accuracy", convert=wic_row, labels=("false", "true"), hub="super_glue/wic",
         roles=("target",), train_size=5_428, dev_size=638,
         description="Words in context: is the word used in the same sense in both sentences?", **_SG),
    Task("multirc", "grouped_binary", "multirc_f1a_em", convert=multirc_rows, labels=("false", "true"),
         hub="super_glue/multirc", roles=("target",), train_size=27_243, dev_size=4_848,
         description="Multi-sentence reading comprehension: is each answer option true? (per question)", **_SG),
    Task("record", "grouped_binary", "record_f1_em", convert=record_rows, labels=("false", "true"),
         hub="super_glue/record", roles=("target",), train_size=100_730, dev_size=10_000,
         description="Cloze over news: which passage entity fills @placeholder? (candidates scored)", **_SG),
)
