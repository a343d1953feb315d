"""A small English world shared by every generated task, so the tasks share skills."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

NOUNS = [("doctor", "doctors"), ("teacher", "teachers"), ("farmer", "farmers"), ("pilot", "pilots"),
         ("student", "students"), ("lawyer", "lawyers"), ("baker", "bakers"), ("singer", "singers"),
         ("nurse", "nurses"), ("painter", "painters"), ("driver", "drivers"), ("writer", "writers")]
OBJECTS = [("house", "houses"), ("car", "cars"), ("book", "books"), ("garden", "gardens"),
           ("boat", "boats"), ("letter", "letters"), ("window", "windows"), ("table", "tables"),
           ("bridge", "bridges"), ("picture", "pictures"), ("song", "songs"), ("lamp", "lamps")]
# (3rd person singular present, plural present, past, base)
VERBS = [("visits", "visit", "visited", "visit"), ("paints", "paint", "painted", "paint"),
         ("cleans", "clean", "cleaned", "clean"), ("opens", "open", "opened", "open"),
         ("watches", "watch", "watched", "watch"), ("builds", "build", "built", "build"),
         ("sees", "see", "saw", "see"), ("finds", "find", "found", "find"),
         ("carries", "carry", "carried", "carry"), ("buys", "buy", "bought", "buy"),
         ("sells", "sell", "sold", "sell"), ("draws", "draw", "drew", "draw")]
ADJECTIVES = ["small", "large", "old", "new", "red", "blue", "wooden", "quiet", "tall", "green"]
PLACES = ["in the city", "near the river", "at the school", "in the park", "by the station",
          "on the hill", "behind the market", "in the village"]
ADVERBS = ["quickly", "slowly", "carefully", "happily", "often", "suddenly"]
POSITIVE = ["wonderful", "great", "lovely", "excellent", "delightful", "superb", "pleasant", "charming"]
NEGATIVE = ["terrible", "awful", "horrible", "dreadful", "boring", "ugly", "poor", "disappointing"]
# (reaction to something good, reaction to something bad)
REACTIONS = [("smiled", "frowned"), ("kept it", "returned it"), ("praised it", "complained about it"),
             ("laughed happily", "sighed sadly"), ("told a friend to try it", "warned a friend about it"),
             ("bought another one", "threw it away")]


@dataclass(frozen=True)
class Clause:
    """One simple transitive clause; `render` turns it into a sentence."""

    subj: int
    subj_plural: bool
    verb: int
    past: bool
    obj: int
    obj_plural: bool
    negated: bool = False
    adjective: str | None = None
    place: str | None = None
    adverb: str | None = None

    def subject(self) -> str:
        return "the " + NOUNS[self.subj][self.subj_plural]

    def verb_phrase(self) -> str:
        sg, pl, past, base = VERBS[self.verb]
        if self.negated:
            aux = "did" if self.past else ("do" if self.subj_plural else "does")
            return f"{aux} not {base}"
        return past if self.past else (pl if self.subj_plural else sg)

    def object(self) -> str:
        noun = OBJECTS[self.obj][self.obj_plural]
        det = "the" if self.obj_plural else ("an" if (self.adjective or noun)[0] in "aeiou" else "a")
        return " ".join(w for w in (det, self.adjective, noun) if w)

    def words(self) -> list[str]:
        parts = [self.subject()]
        if self.adverb:
            parts.append(self.adverb)
        parts += [self.verb_phrase(), self.object()]
        if self.place:
            parts.append(self.place)
        return " ".join(parts).split()

    def render(self) -> str:
        return sentence(self.words())


def sentence(words: list[str]) -> str:
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def random_clause(rng: random.Random, modifiers: float = 0.5, negation: float = 0.0) -> Clause:
    return Clause(
        subj=rng.randrange(len(NOUNS)), subj_plural=rng.random() < 0.5, verb=rng.randrange(len(VERBS)),
        past=rng.random() < 0.5, obj=rng.randrange(len(OBJECTS)), obj_plural=rng.random() < 0.5,
        negated=rng.random() < negation,
        adjective=rng.choice(ADJECTIVES) if rng.random() < modifiers else None,
        place=rng.choice(PLACES) if rng.random() < modifiers else None,
        adverb=rng.choice(ADVERBS) if rng.random() < modifiers / 2 else None)


def other(rng: random.Random, n: int, not_this: int) -> int:
    return rng.choice([i for i in range(n) if i != not_this])


def without_modifiers(c: Clause) -> Clause:
    return replace(c, adjective=None, place=None, adverb=None)
