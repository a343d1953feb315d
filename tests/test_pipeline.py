import yaml

from stilts import pipeline


def test_stages_cover_the_grid(make_params):
    params = make_params(tasks={"intermediate": ["syn_nli", "syn_sentiment"], "target": ["syn_rte", "syn_copa"],
                                "probe": ["syn_tense"]}, study={"restarts": 2},
                         task_overrides={"syn_rte": {"lr": 1e-5}})
    st = pipeline.stages(params)
    assert len([s for s in st if s.startswith("prepare-")]) == 5
    assert len([s for s in st if s.startswith("intermediate-")]) == 2 * 2
    assert len([s for s in st if s.startswith("transfer-")]) == 3 * 3 * 2  # (none + 2) × 3 tasks × 2 restarts
    rte = st["transfer-syn_nli-syn_rte-r1"]
    assert "task_overrides.syn_rte" in rte["params"] and "models/intermediate/syn_nli/r1" in rte["deps"]
    assert "task_overrides.syn_rte" not in st["transfer-syn_nli-syn_copa-r1"]["params"]
    assert st["transfer-none-syn_rte-r0"]["cmd"] == "stilts transfer --source none --task syn_rte --restart 0"
    assert len(st["analyze"]["deps"]) >= 18


def test_write_and_check(make_params):
    import pytest

    from stilts.errors import StiltsError

    params = make_params()
    path = pipeline.write(params)
    assert yaml.safe_load(path.read_text())["stages"]["analyze"]["cmd"] == "stilts analyze"
    pipeline.check(params)
    path.write_text(path.read_text() + "\n# edited\n")
    with pytest.raises(StiltsError, match="out of date"):
        pipeline.check(params)


def test_repo_dvc_yaml_matches_params():
    from pathlib import Path

    from stilts import config

    pipeline.check(config.load(Path(__file__).parents[1] / "params.yaml"))
