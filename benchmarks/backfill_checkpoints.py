"""One-off: give versions registered before training runs logged their checkpoint one, so Lite can
distil them and the family benchmark can time them in PyTorch.

For each registered model's champion whose run has no `checkpoint` artifact, the kfp.local output
of the same MLflow run (matched by the run id the validate step returned) is used, but only after
it reproduces the registered ONNX file: logits on 256 real test texts within 1e-4.

    python benchmarks/backfill_checkpoints.py --state-dir .yanjin-bench
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

from yanjin.registry import CHECKPOINT_ARTIFACT, find_champion
from yanjin.models.family import TOKENIZER_FILE, load_checkpoint
from yanjin.models.inference import OnnxClassifier
from yanjin.models.tokenizer import TextTokenizer
from yanjin.state import LocalState


def kfp_checkpoints(state: LocalState) -> dict[str, Path]:
    """MLflow run id -> the train step's checkpoint folder of that kfp.local run."""
    found = {}
    for run_dir in Path(state.pipeline_root).iterdir():
        out = run_dir / "validate-data" / "executor_output.json"
        ckpt = run_dir / "train-model" / "checkpoint"
        if out.is_file() and ckpt.is_dir():
            found[json.loads(out.read_text())["parameterValues"]["run_id"]] = ckpt
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state-dir", type=Path, default=Path(".yanjin-bench"))
    ap.add_argument("--test", type=Path, default=Path("../shared/data/banking77/test.csv"))
    args = ap.parse_args()
    state = LocalState(args.state_dir)
    mlflow.set_tracking_uri(state.tracking_uri)
    client = mlflow.MlflowClient()
    local = kfp_checkpoints(state)
    texts = pd.read_csv(args.test)["text"].tolist()[:256]
    for rm in client.search_registered_models():
        with tempfile.TemporaryDirectory() as tmp:
            champ = find_champion(rm.name, tmp)
            if champ is None:
                continue
            if client.list_artifacts(champ.run_id, CHECKPOINT_ARTIFACT):
                print(f"{rm.name} v{champ.version}: has a checkpoint")
                continue
            ckpt = local.get(champ.run_id)
            if ckpt is None:
                print(f"{rm.name} v{champ.version}: no kfp output for run {champ.run_id}; re-run its pipeline")
                continue
            model, spec, _ = load_checkpoint(ckpt)
            ids, mask = TextTokenizer(ckpt / TOKENIZER_FILE, spec.max_length)(texts)
            with torch.no_grad():
                ref = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
            diff = float(np.abs(OnnxClassifier.from_dir(champ.bundle_dir).logits(ids, mask) - ref).max())
            if diff > 1e-4:
                print(f"{rm.name} v{champ.version}: {ckpt} differs from the registered ONNX by {diff:.2e}; skipped")
                continue
            with mlflow.start_run(run_id=champ.run_id):
                mlflow.log_artifacts(str(ckpt), CHECKPOINT_ARTIFACT)
            print(f"{rm.name} v{champ.version}: logged {ckpt} (max |logit diff| vs registered ONNX {diff:.2e})")


if __name__ == "__main__":
    main()
