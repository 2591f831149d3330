"""Runs on a Kubeflow Pipelines cluster: one now (`yanjin pipeline submit`) or every quarter
(`yanjin pipeline schedule --quarterly`), from the same compiled package as the UI upload."""
from __future__ import annotations

from pathlib import Path


def package_parameters(package: Path) -> set[str]:
    """The run form's fields of a compiled package (the one-member pipeline's, or the family's)."""
    import yaml

    spec = next(yaml.safe_load_all(Path(package).read_text()))
    return set(spec["root"]["inputDefinitions"]["parameters"])


def pipeline_arguments(config, registered_model: str, overrides: dict[str, str], accepted: set[str]) -> dict[str, str]:
    """The pipeline's parameters: the profile's config and (one-member package) the model name, then
    --param k=v (data paths on the cluster's storage, the MLflow server's URI, ...); a name the package
    does not take is an error."""
    if unknown := sorted(set(overrides) - accepted):
        raise ValueError(f"the package takes no parameter {unknown}; it takes {sorted(accepted)}")
    base = {"config_json": config.to_json()} | ({"registered_model": registered_model} if "registered_model" in accepted
                                                 else {})
    return base | overrides


def recurring_run_options(name: str, experiment_id: str, package: Path, arguments: dict, cron: str) -> dict:
    """What a quarterly retraining needs from KFP: the 6-field cron (seconds first), never two runs at once,
    no catch-up after downtime, and caching off (a retraining must re-read data that changed)."""
    return {"experiment_id": experiment_id, "job_name": name, "cron_expression": cron, "max_concurrency": 1,
            "no_catchup": True, "enable_caching": False, "pipeline_package_path": str(package), "params": arguments,
            "description": f"yanjin retraining, cron '{cron}' (KFP: seconds minutes hours day month weekday)"}


def client(host: str, namespace: str | None = None):
    import kfp

    return kfp.Client(host=host, namespace=namespace)


def experiment_id(kfp_client, name: str, namespace: str | None = None) -> str:
    try:
        return kfp_client.get_experiment(experiment_name=name, namespace=namespace).experiment_id
    except Exception:  # noqa: BLE001 - kfp raises a generic error for "not found"
        return kfp_client.create_experiment(name, namespace=namespace).experiment_id
