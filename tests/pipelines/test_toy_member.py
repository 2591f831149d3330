"""Adding a family member is one recipe plus one builder, through the public path: a toy member
(a 3-layer V1 whose network comes from an installed plugin's `yanjin.builders` entry point) runs
through the tiny pipeline and registers under its own name, like the shipped members."""
import json
import sys

import mlflow
import pytest

from yanjin import family
from yanjin.config import load_config, with_variant
from yanjin.family import Recipe, register_member
from yanjin.pipelines.run import LocalState, run_local

PLUGIN = '''
from dataclasses import replace

from yanjin.models.family import v1


def three_layer_v1(spec, num_labels):
    """V1's dense network, always three blocks deep (a plugin's own builder)."""
    return v1(replace(spec, n_layers=3), num_labels)
'''


@pytest.fixture
def toy_member(tmp_path, monkeypatch):
    """An installed plugin: a module and a dist-info whose entry point names its builder."""
    site = tmp_path / "site"
    (site / "toy_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "toy_plugin.py").write_text(PLUGIN)
    (site / "toy_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (site / "toy_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[yanjin.builders]\ntoy-3-layer = toy_plugin:three_layer_v1\n")
    monkeypatch.setenv("PYTHONPATH", str(site))  # the kfp.local steps run in subprocesses
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(family, "FAMILY", dict(family.FAMILY))
    register_member("toy", Recipe(builder="toy-3-layer", model={"n_layers": 3}, summary="a 3-layer V1"))
    yield "toy"


def test_a_toy_member_builds_through_the_tiny_pipeline(toy_member, tmp_path, data_dir):
    cfg = with_variant(load_config("tiny"), toy_member)
    state = LocalState(tmp_path / "state")
    outcome = run_local(cfg, str(data_dir / "train.csv"), str(data_dir / "test.csv"),
                        str(data_dir / "categories.json"), state, None, "test-commit")
    assert outcome.registered_model == "banking77-toy" and outcome.gate == "register" and outcome.version == "1"
    client = mlflow.MlflowClient(state.tracking_uri)
    mv = client.get_model_version("banking77-toy", "1")
    recorded = json.loads(mv.tags["config"])
    assert mv.tags["variant"] == "toy" and recorded["recipe"]["builder"] == "toy-3-layer"
    assert recorded["model"]["n_layers"] == 3 and recorded["model"]["builder"] == "toy-3-layer"
    # the checkpoint really has three blocks: the plugin's builder made the network
    ckpt = client.download_artifacts(mv.run_id, "checkpoint", str(tmp_path / "ckpt"))
    from safetensors import safe_open

    with safe_open(f"{ckpt}/model.safetensors", "pt") as f:
        blocks = {k.split(".")[2] for k in f.keys() if k.startswith("encoder.blocks.")}
    assert blocks == {"0", "1", "2"}


def test_an_unknown_builder_is_named_with_what_is_installed():
    from yanjin.config import ModelSpec
    from yanjin.models.family import build_classifier

    with pytest.raises(ValueError, match="unknown builder 'nope'.*shipped: \\['v1', 'v2'\\]"):
        build_classifier(ModelSpec(variant="x", builder="nope"), 3)


def test_a_member_without_a_teacher_cannot_be_compressed():
    with pytest.raises(ValueError, match="teacher is named exactly when start is 'teacher'"):
        register_member("bad", Recipe(start="teacher"))
    assert "bad" not in family.FAMILY and sys.modules["yanjin.family"] is family
