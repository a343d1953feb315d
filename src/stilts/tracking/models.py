"""Intermediate checkpoints as MLflow 3 logged models (the UI's Models column; `models:/<model_id>`).

Each checkpoint becomes a logged model linked to the run that trained it (its source run and an
output of that run) and to the run's final dev metrics. The model is an MLflow pyfunc logged as code
(stilts.tracking.pyfunc; nothing pickled), whose predict runs the checkpoint (see stilts.predict).

`mlflow.log_models` says where the weights are:
  reference (default)  the model records the checkpoint's path in the DVC project and the sha256 of
                       every file in it; loading reads the checkpoint there (after `dvc pull` on
                       another machine) and refuses one that is missing or differs.
  copy                 the checkpoint's files go into MLflow's artifact store with the model
                       (e.g. for a remote artifact store, or to serve the model without the project).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

from stilts.errors import StiltsError
from stilts.io import sha256_file, writing

CODE = Path(__file__).with_name("pyfunc_code.py")


def manifest(folder: Path) -> dict[str, str]:
    """sha256 of every file in a checkpoint folder."""
    return {f.name: sha256_file(f) for f in sorted(folder.iterdir()) if f.is_file()}


def _requirements() -> list[str]:
    from importlib import metadata

    pins = []
    for dist in ("stilts", "torch", "transformers", "safetensors", "tokenizers", "mlflow"):
        try:
            pins.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return pins


def log_checkpoint(run, params, checkpoint: Path, name: str, model_params: dict, step: int) -> tuple[str, dict]:
    """Log `checkpoint` as a logged model of `run`; returns (model_id, the sha256 of each of its files)."""
    import mlflow.pyfunc
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model, ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    from stilts.tracking.store import retry

    files = manifest(checkpoint)
    root = params.root.resolve()
    folder = checkpoint.resolve()
    rel = str(folder.relative_to(root)) if folder.is_relative_to(root) else str(folder)
    mode = params.mlflow.log_models
    client = run.client
    model = retry(client.create_logged_model, run.experiment_id, name=name, source_run_id=run.id,
                   params={k: str(v)[:6000] for k, v in model_params.items()}, model_type="stilts-checkpoint",
                   tags={"stilts.checkpoint": rel, "stilts.checkpoint_sha256": files.get("model.safetensors", ""),
                         "stilts.weights": "in MLflow" if mode == "copy" else "in the DVC project (reference)"})
    try:
        # project_root is empty unless given at load time (model_config={"project_root": ...})
        config = {"checkpoint": rel, "project_root": "", "logged_in": str(root), "files": files, "weights": mode}
        with tempfile.TemporaryDirectory(prefix="stilts-model-") as tmp, warnings.catch_warnings(), \
                writing(f"{model.artifact_location} (the logged model of run {run.id})"):
            # an input example would make MLflow load the model (and hash the checkpoint) while logging it
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            mlflow.pyfunc.save_model(
                Path(tmp) / "model", python_model=str(CODE), model_config=config,
                # no input schema (records differ per task type); the params predict accepts (0: as trained)
                signature=ModelSignature(params=ParamSchema([ParamSpec("batch_size", "long", 64),
                                                             ParamSpec("max_length", "long", 0)])),
                artifacts={"checkpoint": str(folder)} if mode == "copy" else None, pip_requirements=_requirements(),
                mlflow_model=Model(artifact_path=model.artifact_location, model_uuid=model.model_id, run_id=run.id,
                                   model_id=model.model_id))
            client.log_model_artifacts(model.model_id, str(Path(tmp) / "model"))
        retry(client.log_outputs, run.id, [LoggedModelOutput(model.model_id, step)])
        retry(client.finalize_logged_model, model.model_id, "READY")
    except BaseException:
        retry(client.finalize_logged_model, model.model_id, "FAILED")
        raise
    return model.model_id, files


def _mismatch(folder: Path, files: dict[str, str]) -> str | None:
    """Why `folder` is not the logged checkpoint; None when every logged file is there with its sha256."""
    if not folder.is_dir():
        return "not there"
    for name, expected in files.items():
        if not (folder / name).is_file():
            return f"{name} missing"
        if sha256_file(folder / name) != expected:
            return f"{name} differs (logged sha256 {expected[:12]}…)"
    return None


def locate(config: dict, artifacts: dict) -> Path:
    """The checkpoint folder a logged model loads: the first candidate whose files match the logged hashes.

    Copied weights come with the model. A reference is looked for under `project_root` when given
    (load_model(uri, model_config={"project_root": ...}) for a clone elsewhere), then under the working
    directory, then in the project where the model was logged; a folder at the same path with other
    contents (another study's checkpoint) is passed over."""
    if "checkpoint" in artifacts:
        folder = Path(artifacts["checkpoint"])
        if why := _mismatch(folder, config["files"]):
            raise StiltsError(f"{folder}: the checkpoint copied into MLflow with this logged model: {why}")
        return folder
    rel = Path(config["checkpoint"])
    roots = [r for r in (config.get("project_root"), str(Path.cwd()), config["logged_in"]) if r]
    rejected = []
    for candidate in dict.fromkeys(Path(r) / rel for r in roots):
        if (why := _mismatch(candidate, config["files"])) is None:
            return candidate
        rejected.append(f"{candidate} ({why})")
    raise StiltsError(f"{rel}: no folder holds the checkpoint of this logged model; tried {'; '.join(rejected)}. "
                      f"Run `dvc pull {rel}` (or `dvc repro`) in the project at {config['logged_in']}, at the "
                      "commit it was logged with, or load with model_config={'project_root': <that project>}")
