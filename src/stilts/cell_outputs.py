"""A finished cell's outputs: its summary (the result JSON), the checkpoint and its logged model, the final
metrics, and the dev predictions of a target cell."""

from __future__ import annotations

import json
from pathlib import Path

from stilts import __version__


def result_summary(task, tags: dict, seed: int, fingerprint: str, result, majority: float, run_id) -> dict:
    return {"role": tags["role"], "source": tags["source"], "task": task.name, "restart": tags["restart"],
            "seed": seed, "metric": task.metric, "score": result.best[task.metric], "majority": majority,
            "metrics": result.best, "best_step": result.best_step, "steps": result.steps,
            "stopped_early": result.stopped_early, "fingerprint": fingerprint,
            "train_seconds": round(result.train_seconds, 3), "final_eval_seconds": round(result.final_eval_seconds, 3),
            "examples_per_second": round(result.train_examples / max(result.train_seconds, 1e-9), 2),
            "tokens_per_second": round(result.train_tokens / max(result.train_seconds, 1e-9), 1),
            "mlflow_run_id": run_id}


def log_outputs(run, params, task, settings, summary: dict, result, save_to, model, tokenizer, mlm,
                dev_ds) -> None:
    """The main process's outputs: the checkpoint (a logged model), the final metrics, dev predictions."""
    from stilts import mlm as mlm_loss
    from stilts import modeling
    from stilts.tracking.datasets import dataset_ids

    model_id = None
    if save_to is not None:
        meta = {**summary, "base_model": params.model.name, "stilts_version": __version__, "type": task.type,
                "labels": list(task.labels), "max_seq_length": settings.max_seq_length}
        modeling.save_checkpoint(model, tokenizer, save_to, meta, result.best_state)
        if mlm.model is not None:  # the encoder now holds the best state
            mlm.metrics["mlm_loss_after"] = mlm_loss.loss(model.mlm, tokenizer, mlm.eval, params.mlm.probability)
            run.log_metrics(mlm.metrics, result.steps)
            summary |= mlm.metrics
        model_id = log_checkpoint(run, params, save_to, summary)
    run.log_metrics(final_metrics(summary), result.steps, model_id=model_id,
                    dataset=dataset_ids(params, task.name)["validation"])
    if result.best_predictions is not None:
        run.log_text(predictions_jsonl(params, task, dev_ds, result.best_predictions), DEV_PREDICTIONS)


def final_metrics(summary: dict) -> dict:
    return ({f"final_dev_{k}": v for k, v in summary["metrics"].items()} |
            {"final_dev_score": summary["score"], "majority_score": summary["majority"],
             "train_seconds": summary["train_seconds"], "final_eval_seconds": summary.get("final_eval_seconds"),
             "train_examples_per_second": summary["examples_per_second"]})


def log_checkpoint(run, params, save_to: Path, summary: dict) -> str:
    """The checkpoint as a logged model of its run (the run's tags name its folder, hash and model id)."""
    from stilts.tracking import models

    model_params = {"task": summary["task"], "source": summary["source"], "restart": summary["restart"],
                    "seed": summary["seed"], "base_model": params.model.name, "best_step": summary["best_step"]}
    model_id, files = models.log_checkpoint(run, params, save_to, f"{summary['source']}-r{summary['restart']}",
                                     model_params, summary["steps"])
    run.set_tags({"checkpoint": str(save_to.relative_to(params.root) if save_to.is_relative_to(params.root)
                                    else save_to),
                  "checkpoint_sha256": files.get("model.safetensors", ""), "model_id": model_id})
    return model_id


def complete_logging(params, done: dict, save_to: Path) -> None:
    """A checkpoint written by a process killed before its run logged the model and final metrics: log them."""
    from stilts import tracking
    from stilts.tracking.datasets import dataset_ids

    if tracking.run_status(params, done.get("mlflow_run_id")) != "RUNNING":
        return
    run = tracking.resume_run(params, done["mlflow_run_id"])
    model_id = log_checkpoint(run, params, save_to, done)
    run.log_metrics(final_metrics(done), done["steps"], model_id=model_id,
                    dataset=dataset_ids(params, done["task"])["validation"])
    run.finish()


DEV_PREDICTIONS = "predictions/dev.jsonl"


def predictions_jsonl(params, task, dev_ds, predictions: list) -> str:
    """One line per dev example, in the prepared data's order: its idx, the prediction and the gold label."""
    import numpy as np

    from stilts import data
    from stilts.predict import decode

    records = data.load_records(params, task.name, "validation")
    pred, gold = decode(task, np.asarray(predictions)), decode(task, np.asarray(dev_ds["labels"]))
    return "".join(json.dumps({"idx": r["idx"], "prediction": p, "gold": g}) + "\n"
                   for r, p, g in zip(records, pred, gold))
