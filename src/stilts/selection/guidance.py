"""What `stilts rank` tells a user about their own target beyond the ranking: the facts it read from the
target's data, which candidates can be trained here, what a baseline run would add, and how far a grid
measured with another encoder can be trusted."""

from __future__ import annotations

import math

from stilts.selection import grids as grids_

PROBE_BASELINES = (0.6, 0.9)  # first-baseline scores the note shows the harm prediction at


def train_sizes(params, targets) -> dict[str, int]:
    """Training-set sizes counted in the data, for declared targets whose task file states none."""
    from stilts import data
    from stilts.io import read_json
    from stilts.selection.signals import has_data
    from stilts.tasks import registry

    out = {}
    for t in targets:
        if t not in registry.names() or registry.get(t).train_size or not has_data(params, t):
            continue
        meta = params.path(params.data.processed_dir) / t / "meta.json"
        if not meta.is_file():
            data.prepare(params, t)
        out[t] = int(read_json(meta)["counts"]["train"])
    return out


def data_status(params, candidates) -> dict[str, str]:
    """candidate → `present`, or what it needs before it can be trained: its data, or (a task known only from
    a grid) a task file too."""
    from stilts.selection.signals import has_data
    from stilts.tasks import registry

    def status(c: str) -> str:
        if has_data(params, c):
            return "present"
        where = f"data in {params.path(params.data.raw_dir) / c}/"
        if c not in registry.names():
            return f"needed: a task file {params.data.tasks_dir}/{c}.yaml and its {where}"
        return f"needed in {params.path(params.data.raw_dir) / c}/ before training"

    return {c: status(c) for c in dict.fromkeys(candidates)}


def baseline_notes(params, grid_list, targets, baselines: dict, sizes: dict) -> list[str]:
    """For each target without a baseline run: how to get one and what it would change."""
    from stilts.selection import harm, prior

    notes = []
    for t in targets:
        if baselines.get(t) is not None or not grid_list:
            continue
        eff = prior.fit(grid_list, {t})
        if eff is None:
            continue
        top = float(eff.a.max())
        p = []
        for b in PROBE_BASELINES:
            effect = harm.target_effect(eff, grid_list, t, b, sizes.get(t))
            if effect is not None:
                var = float(eff.a_cov.loc[eff.a.idxmax(), eff.a.idxmax()]) + eff.sigma2 + effect[1]
                p.append(f"{_phi((top + effect[0]) / math.sqrt(var)):.2f} if it scores {b:.1f}")
        change = (f": P(the first candidate beats the baseline) then uses the target's headroom "
                  f"({'; '.join(p)})") if p else ""
        notes.append(f"{t}: no baseline run yet; `stilts transfer --source none --task {t}` gives one{change}; "
                     "the candidates' order does not depend on it")
    return notes


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def encoder_notes(params, grid_list: list[grids_.Grid]) -> list[str]:
    """Which grids were measured with model.name (they weigh most), or that none was; and how the prior did for
    the grid closest to the user's encoder when it was left out of the others (published.held_out_scores)."""
    from stilts.selection import encoders, published

    model = params.model.name
    measured = [g for g in grid_list if g.encoder]
    if not measured:
        return []
    same = [g.name for g in measured if encoders.same(g.encoder, model)]
    if same:
        line = (f"{', '.join(same)} {'was' if len(same) == 1 else 'were'} measured with your encoder ({model}): "
                f"{'it weighs' if len(same) == 1 else 'they weigh'} most among the catalogue's grids")
    else:
        line = (f"no prior grid was measured with your encoder ({model}): source effects carry over between "
                "encoders only in part, so the prior weighs each grid by its closeness to yours")
    quoted = published.held_out_scores(model)
    return [line + ("; " + quoted if quoted else "")]
