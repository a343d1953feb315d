"""What MLflow runs to load a stilts checkpoint model (a model logged as code: nothing is unpickled)."""

import mlflow.models

from stilts.tracking.pyfunc import CheckpointModel

mlflow.models.set_model(CheckpointModel())
