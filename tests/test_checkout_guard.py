"""The session guard (tests/conftest.py) that fails a test run which changed the checkout's study outputs."""

from tests.conftest import study_outputs_state


def test_the_guard_sees_a_study_output_written_and_ignores_pipeline_sources(tmp_path):
    (tmp_path / "models" / "intermediate" / "syn_nli" / "r0").mkdir(parents=True)
    (tmp_path / "mlflow.db").write_bytes(b"")
    before = study_outputs_state(tmp_path)
    (tmp_path / "models" / "intermediate" / "syn_nli" / "r0" / "config.json").write_text("{}")
    (tmp_path / "mlflow.db").write_bytes(b"a run")
    (tmp_path / "pipelines" / "none").mkdir(parents=True)
    (tmp_path / "pipelines" / "none" / "dvc.yaml").write_text("stages: {}\n")
    after = study_outputs_state(tmp_path)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == {"models/intermediate/syn_nli/r0/config.json", "mlflow.db"}
