"""The conversion functions a task file names (`convert: wsc_row`): a source row -> the record row(s) its task
type reads; None skips the row. A built-in task keeps Python only here, where its official layout needs code."""

from __future__ import annotations

import hashlib
import re


def snli_row(row: dict) -> dict | None:
    """SNLI marks pairs without a majority label with '-' (hub: -1); the official scripts drop them."""
    return None if str(row.get("gold_label", row.get("label"))) in ("-", "-1") else row


def blimp_pair(row: dict) -> dict:
    """A minimal pair as a 2-way choice; which side the acceptable sentence is on comes from a hash of
    the pair's id, so the label is balanced and fixed."""
    good_first = int(hashlib.sha256(str(row.get("idx")).encode()).hexdigest(), 16) % 2 == 0
    good, bad = row.get("sentence_good"), row.get("sentence_bad")
    return {**row, "choices": [good, bad] if good_first else [bad, good], "label": 0 if good_first else 1}


def commonsenseqa_row(row: dict) -> dict:
    """Official layout: {"question": {"stem", "choices": [{"label": "A", "text"}]}, "answerKey": "A"}."""
    q = row.get("question") or {}
    choices = sorted(q.get("choices") or [], key=lambda c: c.get("label", ""))
    letters = [c.get("label") for c in choices]
    key = row.get("answerKey")
    return {"stem": q.get("stem"), "choices": [c.get("text") for c in choices],
            "label": letters.index(key) if key in letters else key}


def hellaswag_row(row: dict) -> dict:
    return {**row, "context": row.get("ctx"), "choices": row.get("endings")}


def copa_question(row: dict) -> dict:
    """COPA asks for a cause or an effect; spell the question out for the encoder."""
    asks = row.get("question")
    return {**row, "question_text": "What was the cause?" if asks == "cause" else "What happened as a result?"}


def _word_offsets(text: str) -> list[tuple[int, int]]:
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


# what a task file's `convert` may name
BY_NAME = {f.__name__: f for f in (snli_row, blimp_pair, commonsenseqa_row, hellaswag_row, copa_question, wsc_row,
                                    wic_row, multirc_rows, record_rows, qasrl_rows, qamr_row, ccg_row)}
