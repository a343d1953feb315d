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
    assert {"data/settings/train/syn_rte.json", "models/intermediate/syn_nli/r1"} <= set(rte["deps"])
    assert "data/settings/train/syn_rte.json" not in st["transfer-syn_nli-syn_copa-r1"]["deps"]
    assert not any("params" in s for s in st.values())  # no params keys: the settings files stand for them
    assert st["settings"]["deps"][0] == "params.yaml"
    assert {"data/settings/train/syn_rte.json": {"persist": True}} in st["settings"]["outs"]
    assert "data/settings/prepare/syn_rte.json" in st["prepare-syn_rte"]["deps"]
    assert "data/settings/analyze.json" in st["analyze"]["deps"]
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


def test_each_source_has_its_own_dvc_yaml_and_stale_ones_go(make_params):
    import pytest

    from stilts.errors import StiltsError

    params = make_params(tasks={"intermediate": ["syn_nli", "syn_sentiment"], "target": ["syn_rte"], "probe": []})
    pipeline.write(params)
    top = yaml.safe_load((params.root / "dvc.yaml").read_text())["stages"]
    assert all(n.startswith(("prepare-", "sweep-")) or n in ("settings", "analyze") for n in top)
    nli = yaml.safe_load((params.root / "pipelines" / "syn_nli" / "dvc.yaml").read_text())["stages"]
    assert set(nli) == {"intermediate-syn_nli-r0", "transfer-syn_nli-syn_rte-r0"}
    assert nli["transfer-syn_nli-syn_rte-r0"]["wdir"] == "../.."  # paths stay relative to the project root
    assert nli["transfer-syn_nli-syn_rte-r0"]["outs"] == ["results/syn_nli/syn_rte/r0.json"]
    none = yaml.safe_load((params.root / "pipelines" / "none" / "dvc.yaml").read_text())["stages"]
    assert set(none) == {"transfer-none-syn_rte-r0"}
    assert pipeline.address("pipelines/none/dvc.yaml", "transfer-none-syn_rte-r0") == \
        "pipelines/none/dvc.yaml:transfer-none-syn_rte-r0"
    assert pipeline.address("dvc.yaml", "analyze") == "analyze"

    (params.root / "pipelines" / "syn_sentiment" / "dvc.lock").write_text("schema: '2.0'\n")
    dropped = make_params(tasks={"intermediate": ["syn_nli"], "target": ["syn_rte"], "probe": []})
    with pytest.raises(StiltsError, match="syn_sentiment/dvc.yaml: a source no longer in"):
        pipeline.check(dropped)
    pipeline.write(dropped)
    assert not (params.root / "pipelines" / "syn_sentiment").exists()
    pipeline.check(dropped)


def test_repo_dvc_yaml_matches_params():
    from pathlib import Path

    from stilts import config

    pipeline.check(config.load(Path(__file__).parents[1] / "params.yaml"))


def test_settings_files_change_only_for_the_task_whose_settings_changed(make_params):
    import json

    from stilts import settings

    params = make_params(tasks={"intermediate": ["syn_nli"], "target": ["syn_rte", "syn_copa"], "probe": []})
    assert {p.relative_to(params.root).as_posix() for p in settings.write(params)} == set(settings.files(params))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (params.root / "data" / "settings").rglob("*.json")}
    assert settings.write(params) == []  # nothing changed: nothing rewritten
    rte = json.loads(before[params.root / "data/settings/train/syn_rte.json"][0])
    assert rte["task"]["metric"] == "accuracy" and rte["task"]["convert"] is None
    copa = json.loads(before[params.root / "data/settings/prepare/syn_copa.json"][0])
    assert copa["task"]["convert"] == "copa_question"  # by name, as its task file says it
    assert rte["train"]["epochs"] == 1 and rte["model"]["name"] == params.model.name and rte["sweep"] is None

    changed = make_params(tasks={"intermediate": ["syn_nli"], "target": ["syn_rte", "syn_copa"], "probe": []},
                          task_overrides={"syn_copa": {"epochs": 3}})
    written = [p.relative_to(params.root).as_posix() for p in settings.write(changed)]
    assert written == ["data/settings/train/syn_copa.json"]
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (params.root / "data" / "settings").rglob("*.json")}
    assert {p for p in after if after[p] != before[p]} == {params.root / "data/settings/train/syn_copa.json"}
    assert json.loads(after[params.root / "data/settings/train/syn_copa.json"][0])["train"]["epochs"] == 3


def test_settings_stage_stops_when_params_add_a_stage(make_params, capsys, monkeypatch):
    """`dvc repro` after an edit that adds stages (here a task): its first stage says to write the pipeline."""
    from stilts import cli

    monkeypatch.setenv("STILTS_WORKER", "0")
    params = make_params()
    pipeline.write(params)
    argv = ["--params", str(params.root / "params.yaml"), "settings"]
    assert cli.main(argv) == 0 and (params.root / "data" / "settings" / "train" / "syn_rte.json").is_file()
    capsys.readouterr()
    make_params(tasks={"target": ["syn_rte", "syn_copa"]})
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.strip().endswith("dvc.yaml: out of date with "
                                                         f"{params.root / 'params.yaml'}; run `stilts pipeline`")
    assert not (params.root / "data" / "settings" / "train" / "syn_copa.json").exists()
