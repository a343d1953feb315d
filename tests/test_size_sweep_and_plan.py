"""RQ4 data-size sources (<task>__n<N>) through cells, pipeline and analysis; and `stilts plan`."""

import pandas as pd
import pytest

from stilts import cells, data, pipeline, plan
from stilts.analysis import rq4


def test_size_table_by_hand():
    cells_df = pd.DataFrame({"source": ["a__n100", "a__n100", "a__n200", "a", "b"],
                             "task": ["t1", "t2", "t1", "t1", "t1"], "role": ["target"] * 5,
                             "delta": [1.0, 3.0, 4.0, 6.0, 9.0]})
    t = rq4.size_table(cells_df, {"a": 800})
    assert list(t["size"]) == [100, 200, 800] and list(t["avg_target_delta"]) == [2.0, 4.0, 6.0]
    assert set(t["source_task"]) == {"a"}  # b has no sized variants


def test_sized_sources_in_cells_and_pipeline(make_params):
    params = make_params(study={"restarts": 1, "size_sweep_tasks": ["syn_nli"], "size_sweep_sizes": [16]})
    assert params.sources == ["syn_nli", "syn_nli__n16"]
    st = pipeline.stages(params)
    assert st["intermediate-syn_nli__n16-r0"]["cmd"] == "stilts intermediate --task syn_nli --restart 0 --size 16"
    assert "models/intermediate/syn_nli__n16/r0" in st["transfer-syn_nli__n16-syn_rte-r0"]["deps"]
    assert "transfer-syn_nli__n16-syn_tense-r0" not in st  # size variants are measured on targets only
    data.prepare(params, "syn_nli"), data.prepare(params, "syn_rte")
    s = cells.intermediate(params, "syn_nli", 0, size=16)
    assert s["source"] == "syn_nli__n16"
    assert (params.root / "models/intermediate/syn_nli__n16/r0/model.safetensors").is_file()
    assert cells.transfer(params, "syn_nli__n16", "syn_rte", 0)["source"] == "syn_nli__n16"
    assert cells.parse_source("syn_nli__n16") == ("syn_nli", 16) and cells.parse_source("syn_nli") == ("syn_nli", None)


def test_plan_counts_the_grid(make_params):
    params = make_params(study={"restarts": 2}, sweep={"enabled": True, "grid": {"lr": [1e-3, 1e-4]}})
    runs = plan.runs(params)
    kinds = pd.Series([r.kind for r in runs]).value_counts().to_dict()
    # 3 tasks × 2 points; 1 intermediate × 2 restarts; 2 tasks × 2 restarts × (baseline + 1 source)
    assert kinds == {"sweep": 6, "intermediate": 2, "transfer": 8}
    text = plan.report(params, gpu="H100", measure=False)
    assert "16 runs" in text and "GPU-hours" in text
    from stilts.errors import StiltsError

    with pytest.raises(StiltsError, match="unknown GPU class 'H10'"):
        plan.report(params, gpu="H10", measure=False)


def test_plan_uses_the_measured_efficiency_and_says_where_it_comes_from(tmp_path, make_params):
    """GPU-hours come from the calibration table per GPU class and batch size; a combination never measured
    is estimated (launch-bound below a measured batch, the same MFU above, the same share of the peak on
    another GPU class) and labelled so; --mfu overrides it."""
    (tmp_path / "cal.csv").write_text(
        "# comment\n"
        "gpu,batch_size,achieved_tflops,examples_per_s,model,task,max_length,setup,date,source\n"
        "H200,32,98.9,348,m,rte,256,s,2026-01,old\n"
        "H200,32,197.8,700,m,rte,256,s,2026-02,new\n"
        "H200,8,49.45,100,m,rte,256,s,2026-02,new\n")
    table = plan.calibration(tmp_path / "cal.csv")
    assert table["H200"][32]["source"] == "new"  # the latest row per (gpu, batch)
    exact = plan.efficiency("H200", 32, table)
    assert exact.mfu == pytest.approx(0.2) and exact.how == "measured on H200" and exact.row["source"] == "new"
    small = plan.efficiency("H200", 4, table)  # batch 8's step time: half of its examples per step
    assert small.mfu == pytest.approx(0.05 / 2) and small.how == "not measured: H200's step time at batch 8 assumed"
    large = plan.efficiency("H200", 64, table)
    assert large.mfu == pytest.approx(0.2) and "MFU at batch 32 assumed" in large.how
    other = plan.efficiency("A100", 32, table)
    assert other.mfu == pytest.approx(0.2) and "A100 never measured" in other.how
    assert plan.efficiency("H200", 32, {}) is None

    params = make_params()
    text = plan.report(params, gpu="H100", measure=False)
    assert "measured efficiency of stilts' loop" in text and "batch   8:" in text and "H100 never measured" in text
    assert "measured: H200 batch 32:" in text
    assert "(assumed: --mfu)" in plan.report(params, gpu="H100", mfu=0.35, measure=False)
