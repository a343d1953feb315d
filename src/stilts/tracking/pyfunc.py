"""The MLflow pyfunc of an intermediate checkpoint: `mlflow.pyfunc.load_model("models:/<model_id>")`.

predict(records) takes records in the checkpoint task's prepared format: a pandas DataFrame or a list
of dicts with the fields of data/processed/<task>/*.jsonl (e.g. `text_a`, `text_b` for sentence-pair
classification; `context`, `choices` for multiple choice; `label` may be left out). It returns a
DataFrame with one row per record: `logits`, the head's raw outputs (one score per label, or per
choice, ...), and `prediction`, the task's decision (a label name where the task has names).
params: `batch_size` (default 64), `max_length` (default: the training max_seq_length).
Outputs equal those of `stilts.predict.load(<checkpoint folder>).predict(records)`.
"""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd


class CheckpointModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from stilts import predict
        from stilts.tracking.models import locate

        self.predictor = predict.load(locate(context.model_config, context.artifacts))

    # the hint tells MLflow not to infer a schema (records differ per task type); lists of dicts work too
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if isinstance(model_input, dict):
            model_input = [model_input]
        records = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        return self.predictor.predict(records, **(params or {}))
