"""The compiled YAML is what the Kubeflow UI uploads: image, descriptions, the gate, determinism."""
import yaml

from yanjin.pipelines.run import compile_pipeline


def test_compiled_pipeline_uses_the_image_describes_parameters_and_gates(tmp_path):
    path = compile_pipeline(tmp_path / "p.yaml", image="registry.example/yanjin:1.2.3")
    spec = yaml.safe_load(path.read_text())
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/yanjin:1.2.3"}
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"train_data", "test_data", "config_json", "tracking_uri", "registered_model"} <= set(params)
    assert all(p.get("description") for p in params.values())
    assert "condition-branches-1" in spec["root"]["dag"]["tasks"]  # dsl.If / dsl.Else on the gate's verdict
    branches = spec["components"]["comp-condition-branches-1"]["dag"]["tasks"]
    gate = branches["condition-2"]["triggerPolicy"]["condition"]
    assert "gate-candidate" in gate and "'register'" in gate
    assert "register-model" in spec["components"]["comp-condition-2"]["dag"]["tasks"]
    assert "no-version" in spec["components"]["comp-condition-3"]["dag"]["tasks"]
    # the version the register step made is a pipeline output (dsl.OneOf over both branches)
    assert "version" in spec["root"]["outputDefinitions"]["parameters"]


def test_compiling_twice_gives_the_same_yaml(tmp_path):
    a = compile_pipeline(tmp_path / "a.yaml").read_text()
    b = compile_pipeline(tmp_path / "b.yaml").read_text()
    assert a == b
