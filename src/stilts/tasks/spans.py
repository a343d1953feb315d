"""Extractive span QA (QA-SRL Bank 2.0, QAMR) and CCG supertagging: tasks over tokenised sentences."""

from __future__ import annotations

from stilts.tasks.base import Task
from stilts.tasks.registry import register


def _char_starts(tokens: list[str]) -> list[int]:
    starts, pos = [], 0
    for t in tokens:
        starts.append(pos)
        pos += len(t) + 1
    return starts


def _answer(tokens, starts, first: int, end: int) -> tuple[int, str]:
    return starts[first], " ".join(tokens[first:end])


def qasrl_rows(row: dict) -> list[dict]:
    """QA-SRL: one record per (verb, question); answers are the valid judgments' token spans [s, e)."""
    tokens = [str(t) for t in row.get("sentenceTokens") or []]
    context, starts = " ".join(tokens), _char_starts(tokens)
    out = []
    for verb_key, verb in sorted((row.get("verbEntries") or {}).items(), key=lambda kv: int(kv[0])):
        for question, label in (verb.get("questionLabels") or {}).items():
            spans = [tuple(sp) for j in label.get("answerJudgments") or [] if j.get("isValid")
                     for sp in j.get("spans") or [] if 0 <= sp[0] < sp[1] <= len(tokens)]
            if not spans:
                continue  # no valid answer: the question is not answerable from the sentence
            answers = list(dict.fromkeys(" ".join(tokens[s:e]) for s, e in spans))
            start, text = _answer(tokens, starts, *spans[0])
            out.append({"idx": f"{row.get('sentenceId')}:{verb_key}:{question}", "context": context,
                        "question": question, "answer_start": start, "answer_text": text, "answers": answers})
    return out


def qamr_row(row: dict) -> dict | None:
    """QAMR: answers are sets of token indices (almost always contiguous; taken as min..max);
    the two validators' highlighted answers are further gold answers."""
    tokens = row["sentence"].split(" ")
    starts = _char_starts(tokens)

    def span(indices: str):
        ids = [int(x) for x in indices.split() if x.isdigit() and int(x) < len(tokens)]
        return (min(ids), max(ids) + 1) if ids else None

    first = span(row["answer"])
    if first is None:
        return None
    spans = [first] + [s for v in (row["validator1"], row["validator2"]) if ":" in v
                       for s in [span(v.split(":", 1)[1])] if s]
    start, text = _answer(tokens, starts, *first)
    return {"idx": f"{row['sentence_id']}:{row['target_words']}:{row['worker']}:{row['qa_index']}",
            "context": row["sentence"], "question": row["question"], "answer_start": start, "answer_text": text,
            "answers": list(dict.fromkeys(" ".join(tokens[s:e]) for s, e in spans))}


def ccg_row(row: dict) -> dict:
    """jiant's CCG files: `tokens<TAB>supertags`, both space-separated."""
    return {**row, "words": str(row.get("0", "")).split(), "tags": str(row.get("1", "")).split()}


register(
    Task("qasrl", "span_qa", "span_f1_em", format="jsonl", convert=qasrl_rows,
         files={"train": "qasrl-v2/orig/train.jsonl.gz", "validation": "qasrl-v2/orig/dev.jsonl.gz"},
         family="qa_spans", roles=("intermediate",), train_size=215_000, dev_size=21_000,
         description="QA-SRL Bank 2.0: answer a question about a predicate with a span of the sentence"),
    Task("qamr", "span_qa", "span_f1_em", format="qamr", convert=qamr_row,
         files={"train": "data/filtered/train.tsv", "validation": "data/filtered/dev.tsv"},
         family="qa_spans", roles=("intermediate",), train_size=51_000, dev_size=6_000,
         description="QA-driven meaning representation: wh-questions answered by sentence spans (uwnlp/qamr)"),
    Task("ccg", "tagging", "token_accuracy", format="tsv_noheader", convert=ccg_row,
         files={"train": "ccg.train", "validation": "ccg.dev"},
         family="tagging", roles=("intermediate",), train_size=38_015, dev_size=5_484,
         licence_note="CCGbank is LDC-licensed (LDC2005T13): bring your own jiant-format files",
         description="CCG supertagging (CCGbank; one supertag per word, first sub-token)"),
)
