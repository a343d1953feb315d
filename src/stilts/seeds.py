"""Seeds per restart and role, as the paper used them (intermediate / target / probe).

Restarts beyond the paper's three get seeds derived the same way, so any restart index works.
"""

from __future__ import annotations

PAPER_SEEDS = [(1111001, 1111002, 1111003), (523821, 523822, 523823), (921, 922, 923)]
ROLE_INDEX = {"intermediate": 0, "target": 1, "probe": 2, "sweep": 1}


def seed_for(role: str, restart: int, base: int = 0) -> int:
    if restart < 0:
        raise ValueError(f"restart must be ≥ 0, got {restart}")
    i = ROLE_INDEX[role]
    if restart < len(PAPER_SEEDS):
        return PAPER_SEEDS[restart][i] + base
    return 7_000_000 + 1000 * restart + i + 1 + base
