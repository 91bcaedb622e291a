"""Pre-trained models in MLflow's Model Registry, where MLflow users look for models and their versions.

Each source property and model preset is one registered model, ``cgat-<preset>-<property>``; each
pre-training run that finishes (trained, or installed from a shipped model) is a version of it whose
source is the run's checkpoint, with its model card (or its summary) as description and its results
and provenance as tags. ``resolve_checkpoint`` turns ``models:/NAME/VERSION`` into a checkpoint file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Mapping

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

CHECKPOINT_ARTIFACT_DIR = "checkpoints"  # where a run logs its best checkpoint
MODEL_VERSION_TAG = "cgat.pretrained_model"  # on a transfer: "NAME/VERSION" of the model it starts from
PREFIX = "models:/"


def registered_name(preset: str, prop: str) -> str:
    return f"cgat-{preset}-{prop}"


def register_pretrained(
    client: MlflowClient, run_id: str, preset: str, prop: str, description: str, tags: Mapping[str, str]
) -> ModelVersion:
    """The model version of pre-training run ``run_id``: created once per run (a rerun that finds the
    run finished registers nothing new)."""
    name = registered_name(preset, prop)
    try:
        client.create_registered_model(
            name, description=f"CGAT ({preset} preset) pre-trained on {prop}; one version per pre-training run."
        )
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    existing = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if existing:
        return existing[0]
    return client.create_model_version(
        name, source=f"runs:/{run_id}/{CHECKPOINT_ARTIFACT_DIR}", run_id=run_id, tags=dict(tags),
        description=description,
    )  # fmt: skip


def version_of_run(client: MlflowClient, run_id: str) -> ModelVersion | None:
    """The registered version made from run ``run_id``, if any."""
    found = client.search_model_versions(f"run_id='{run_id}'")
    return found[0] if found else None


def resolve_checkpoint(reference: str | Path, tracking_uri: str | None = None) -> Path:
    """A checkpoint file: ``reference`` itself, or for ``models:/NAME/VERSION`` the version's
    checkpoint, downloaded from the tracking store."""
    text = str(reference)
    if not text.startswith(PREFIX):
        return Path(reference)
    import mlflow.artifacts

    parts = text.removeprefix(PREFIX).split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{text}: a registered model is models:/NAME/VERSION")
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        version = client.get_model_version(*parts)
    except MlflowException as error:
        raise ValueError(f"{text}: no such registered model version in the tracking store "
                         f"({error.message})") from error
    folder = Path(tempfile.mkdtemp(prefix="cgat-model-"))
    mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(folder),
                                        tracking_uri=tracking_uri)  # fmt: skip
    files = sorted(folder.rglob("*.pt"))
    if len(files) != 1:
        raise ValueError(f"{text}: its source {version.source} holds {len(files)} checkpoint files, not one")
    return files[0]
