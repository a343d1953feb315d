"""The generated task suite: small English tasks with designed, shared skills.

Each generator writes its task in an official format (SuperGLUE jsonl, GLUE tsv, SentEval txt),
so generated data goes through the same readers and prepare path as real data.

Skills by design:
- syn_nli (intermediate, CB-style 3-way NLI): does the hypothesis follow from, contradict
  (opposite polarity), or add to (new detail) the premise? Skill: content matching + negation.
- syn_sentiment (intermediate, SST-2-style): is an opinion positive? Negation flips it.
  Skill: lexical sentiment + negation.
- syn_rte (target, RTE-style 2-way): premises of one or two events; the hypothesis restates an
  event, negates it, swaps its agent or adds detail. The syn_nli skill, binary, in a new surface.
- syn_copa (target, COPA-style 2-choice): an opinion and the person's reaction (cause or effect).
  Needs the syn_sentiment skill.
- syn_tense / syn_subjnum / syn_bshift / syn_sentlen (probes, SentEval format): tense of the
  main verb, number of the subject, whether two adjacent words were swapped, length bin.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

from stilts.generate.lexicon import (
    NEGATIVE,
    NOUNS,
    OBJECTS,
    PLACES,
    POSITIVE,
    REACTIONS,
    Clause,
    other,
    random_clause,
    sentence,
    without_modifiers,
)
from stilts.io import atomic_write_text


def _nli_pair(rng: random.Random) -> tuple[str, str, str]:
    p = random_clause(rng, modifiers=0.6, negation=0.3)
    kind = rng.choice(["entailment", "contradiction", "neutral"])
    h = without_modifiers(p) if rng.random() < 0.7 else replace(p, adverb=None)
    if kind == "contradiction":
        h = replace(h, negated=not p.negated)
    elif kind == "neutral":
        change = rng.choice(["place", "adjective", "object", "subject"])
        if change == "place" or (change == "adjective" and p.adjective):
            h = replace(h, place=rng.choice([x for x in PLACES if x != p.place]))
        elif change == "adjective":
            h = replace(h, adjective="new" if p.adjective != "new" else "old")
        elif change == "object":
            h = replace(h, obj=other(rng, len(OBJECTS), p.obj))
        else:
            h = replace(h, subj=other(rng, len(NOUNS), p.subj))
    return p.render(), h.render(), kind


def _opinion(rng: random.Random, subject: str | None = None, positive: bool | None = None,
             negation: float = 0.3) -> tuple[str, bool, str]:
    """An opinion sentence; returns (text, is the opinion positive, subject)."""
    c = random_clause(rng, modifiers=0.0)
    subject = subject or c.subject()
    positive = rng.random() < 0.5 if positive is None else positive
    negated = rng.random() < negation
    word = rng.choice(POSITIVE if positive else NEGATIVE)
    plural = subject.endswith("s")
    verb, copula = ("thought", "was") if c.past else ("think" if plural else "thinks", "is")
    intensifier = rng.choice(["", "", "really", "very", "quite"])
    words = [subject, verb, "the", OBJECTS[c.obj][0], copula, "not" if negated else "", intensifier, word]
    return sentence([w for w in words if w]), positive != negated, subject


def gen_syn_nli(rng, n):
    rows = []
    for i in range(n):
        p, h, label = _nli_pair(rng)
        rows.append({"premise": p, "hypothesis": h, "label": label, "idx": i})
    return rows


def gen_syn_rte(rng, n):
    rows = []
    for i in range(n):
        a = random_clause(rng, 0.5, 0.3)
        target, premise = a, a.render()
        if rng.random() < 0.3:  # sometimes a second event; the hypothesis may be about either
            b = random_clause(rng, 0.3, 0.3)
            premise = f"{premise} Later, {b.render()[0].lower()}{b.render()[1:]}"
            target = rng.choice([a, b])
        h = without_modifiers(target)
        kind = rng.choice(["same", "same", "negate", "agent", "detail"])
        if kind == "negate":
            h = replace(h, negated=not target.negated)
        elif kind == "agent":
            h = replace(h, subj=other(rng, len(NOUNS), target.subj))
        elif kind == "detail":
            h = replace(h, place=rng.choice([x for x in PLACES if x != target.place]))
        label = "entailment" if kind == "same" else "not_entailment"
        rows.append({"premise": premise, "hypothesis": h.render(), "label": label, "idx": i})
    return rows


def gen_syn_sentiment(rng, n):
    return [{"sentence": text, "label": int(pos)} for text, pos, _ in (_opinion(rng) for _ in range(n))]


def gen_syn_copa(rng, n):
    rows = []
    for i in range(n):
        text, positive, subject = _opinion(rng)
        good, bad = rng.choice(REACTIONS)
        right, wrong = (good, bad) if positive else (bad, good)
        if rng.random() < 0.5:
            question, premise = "effect", text
            choices = [sentence(f"{subject} {right}".split()), sentence(f"{subject} {wrong}".split())]
        else:
            question = "cause"
            premise = sentence(f"{subject} {right}".split())
            flipped = _opinion(rng, subject, positive=not positive, negation=0.0)[0]
            if text.count(" not ") != flipped.count(" not "):  # keep the two causes parallel
                flipped = _opinion(rng, subject, positive=positive, negation=1.0)[0]
            choices = [text, flipped]
        label = rng.randrange(2)
        if label == 1:
            choices.reverse()
        rows.append({"premise": premise, "choice1": choices[0], "choice2": choices[1],
                     "question": question, "label": label, "idx": i})
    return rows


def _probe_rows(rng, n, label_of) -> list[tuple[str, str]]:
    rows = []
    for _ in range(n):
        c = random_clause(rng, modifiers=0.6, negation=0.15)
        rows.append(label_of(rng, c))
    return rows


def _tense(rng, c: Clause):
    return ("PAST" if c.past else "PRES"), c.render()


def _subjnum(rng, c: Clause):
    return ("NNS" if c.subj_plural else "NN"), c.render()


def _bshift(rng, c: Clause):
    words = c.words()
    if rng.random() < 0.5:
        return "O", sentence(words)
    i = rng.randrange(1, len(words) - 1)
    words[i], words[i + 1] = words[i + 1], words[i]
    return "I", sentence(words)


def _sentlen(rng, c: Clause):
    n = len(c.words())
    return str(0 if n <= 5 else 1 if n <= 7 else 2 if n <= 9 else 3), c.render()


PROBES = {"syn_tense": _tense, "syn_subjnum": _subjnum, "syn_bshift": _bshift, "syn_sentlen": _sentlen}
# the tasks write_task writes (a task file's `generator`)
NAMES = ("syn_nli", "syn_rte", "syn_copa", "syn_sentiment", *PROBES)


# ----------------------------------------------------------------------------- writers


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _split(rng, gen, n_train, n_val):
    return gen(rng, n_train), gen(rng, n_val)


def write_task(name: str, out: Path, n_train: int, n_val: int, seed: int) -> None:
    """Write generated task `name` into directory `out` in its official format."""
    rng = random.Random(f"{name}:{seed}")
    out.mkdir(parents=True, exist_ok=True)
    if name in ("syn_nli", "syn_rte", "syn_copa"):
        gen = {"syn_nli": gen_syn_nli, "syn_rte": gen_syn_rte, "syn_copa": gen_syn_copa}[name]
        train, val = _split(rng, gen, n_train, n_val)
        _write_jsonl(out / "train.jsonl", train)
        _write_jsonl(out / "val.jsonl", val)
    elif name == "syn_sentiment":
        for fname, n in (("train.tsv", n_train), ("dev.tsv", n_val)):
            rows = gen_syn_sentiment(rng, n)
            atomic_write_text(out / fname, "sentence\tlabel\n" + "".join(f"{r['sentence']}\t{r['label']}\n"
                                                                         for r in rows))
    elif name in PROBES:
        lines = []
        for tag, n in (("tr", n_train), ("va", n_val)):
            lines += [f"{tag}\t{label}\t{text}\n" for label, text in _probe_rows(rng, n, PROBES[name])]
        atomic_write_text(out / f"{name}.txt", "".join(lines))
    else:
        raise KeyError(name)
