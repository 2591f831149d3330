"""The compiled YAML is what the Kubeflow UI uploads: image, descriptions, the gate, resources and
policies per step, determinism."""
import yaml

from yanjin.config import load_config
from yanjin.pipelines.run import compile_pipeline


def compiled(path) -> tuple[dict, dict]:
    """The pipeline spec and its Kubernetes platform spec (deadlines, tolerations)."""
    docs = list(yaml.safe_load_all(path.read_text()))
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    return docs[0], platform


def test_compiled_pipeline_uses_the_image_describes_parameters_and_gates(tmp_path):
    spec, _ = compiled(compile_pipeline(tmp_path / "p.yaml", image="registry.example/yanjin:1.2.3"))
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


def test_every_step_carries_the_profiles_resources_and_policies(tmp_path):
    resources = load_config("full").resources
    spec, platform = compiled(compile_pipeline(tmp_path / "p.yaml", resources=resources))
    executors = spec["deploymentSpec"]["executors"]
    tasks = spec["root"]["dag"]["tasks"] | spec["components"]["comp-condition-2"]["dag"]["tasks"]
    for step, task in {"resolve": "resolve-config", "validate": "validate-data", "adapt": "adapt-domain", "train": "train-model",
                       "export": "export-model", "evaluate": "evaluate-model", "gate": "gate-candidate",
                       "register": "register-model"}.items():
        want, got = getattr(resources, step), executors[f"exec-{task}"]["container"]["resources"]
        assert (got["resourceCpuRequest"], got["resourceCpuLimit"]) == (want.cpu, want.cpu_limit), step
        assert (got["resourceMemoryRequest"], got["resourceMemoryLimit"]) == (want.memory, want.memory_limit), step
        assert "accelerator" not in got, step                       # no GPU unless compiled with --gpu
        assert platform[f"exec-{task}"]["activeDeadlineSeconds"] == str(want.timeout_minutes * 60), step
        assert tasks[task].get("retryPolicy", {}).get("maxRetryCount", 0) == want.retries, step
        assert tasks[task]["cachingOptions"].get("enableCache", False) == want.cache, step
    # what the issue asks of the defaults: MLflow-facing steps retry with backoff, training is never cached,
    # registering is never retried (a retry could register twice)
    assert tasks["gate-candidate"]["retryPolicy"]["backoffFactor"] == 2.0
    assert not tasks["train-model"]["cachingOptions"].get("enableCache") and "retryPolicy" not in tasks["register-model"]


def test_gpu_compile_puts_adapt_and_train_on_a_gpu_node(tmp_path):
    spec, platform = compiled(compile_pipeline(tmp_path / "p.yaml", gpu=True))
    executors = spec["deploymentSpec"]["executors"]
    on_gpu = {name for name, e in executors.items() if "accelerator" in e["container"].get("resources", {})}
    assert on_gpu == {"exec-adapt-domain", "exec-train-model"}
    for name in on_gpu:
        accelerator = executors[name]["container"]["resources"]["accelerator"]
        assert accelerator["resourceType"] == "nvidia.com/gpu" and accelerator["resourceCount"] == "1"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in platform[name]["tolerations"]
    assert "tolerations" not in platform["exec-evaluate-model"]


def test_the_kubeflow_ui_gets_metrics_a_confusion_matrix_and_markdown_pages(tmp_path):
    spec, _ = compiled(compile_pipeline(tmp_path / "p.yaml"))
    def artifacts(component: str) -> dict:
        return {name: a["artifactType"]["schemaTitle"]
                for name, a in spec["components"][component]["outputDefinitions"]["artifacts"].items()}
    assert artifacts("comp-evaluate-model") == {"metrics": "system.Metrics", "confusion": "system.ClassificationMetrics",
                                                 "report": "system.HTML", "summary": "system.Markdown"}
    assert artifacts("comp-gate-candidate") == {"decision": "system.Markdown"}


def test_the_run_form_is_typed_described_and_needs_no_json(tmp_path):
    spec, _ = compiled(compile_pipeline(tmp_path / "p.yaml"))
    params = spec["root"]["inputDefinitions"]["parameters"]
    types = {name: p["parameterType"] for name, p in params.items()}
    assert types["epochs"] == types["seed"] == "NUMBER_INTEGER"
    assert types["learning_rate"] == types["min_improvement"] == "NUMBER_DOUBLE"
    assert {"profile", "member", "overrides", "tracking_uri", "registered_model", "config_json"} <= set(types)
    required = {name for name, p in params.items() if not p.get("isOptional")}
    assert required == {"train_data", "test_data"}                  # a person fills in two fields; JSON is optional
    assert params["profile"]["defaultValue"] == "full" and params["epochs"]["defaultValue"] == 0
    assert all(p.get("description") for p in params.values())
    # every step reads the config the resolve step wrote, not the raw form
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["train-model"]["inputs"]["parameters"]["config_json"]["taskOutputParameter"]["producerTask"] == "resolve-config"


def test_the_family_pipeline_validates_once_and_orders_only_what_recipes_order(tmp_path):
    spec, platform = compiled(compile_pipeline(tmp_path / "f.yaml", resources=load_config("full").resources,
                                               gpu=True, family=True))
    assert spec["pipelineInfo"]["name"] == "yanjin-family"
    tasks = spec["root"]["dag"]["tasks"]
    names = set(tasks)
    assert [n for n in names if n.startswith("validate")] == ["validate-data"]
    assert sum(n.startswith("train-model") for n in names) == sum(n.startswith("gate-candidate") for n in names) == 4
    assert sum(n.startswith("condition-branches") for n in names) == 4  # every member: its gate, dsl.If register
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {n for n, p in params.items() if not p.get("isOptional")} == {"train_data", "test_data"}
    assert all(p.get("description") for p in params.values()) and "member" not in params

    def upstream(task: str) -> set[str]:
        return set(tasks[task].get("dependentTasks", []))

    # members are built in the table's order: v1, v2, pro, lite (suffixes -2, -3, -4)
    assert {"validate-data", "start-member-run"} <= upstream("train-model")
    assert not any(n.startswith(("train-model", "gate-candidate", "condition")) for n in upstream("train-model-2"))
    assert not any(n.startswith(("train-model", "gate-candidate", "condition")) for n in upstream("train-model-3"))
    # Pro's gate waits for V1's row, i.e. V1's register step; Lite trains on the version Pro's branches made
    assert "summarise-member" in upstream("gate-candidate-3")
    teacher = tasks["train-model-4"]["inputs"]["parameters"]["teacher_version"]["taskOutputParameter"]
    assert teacher["producerTask"] == tasks["summarise-member-3"]["inputs"]["parameters"]["version"][
        "taskOutputParameter"]["producerTask"]
    assert tasks["train-model-4"]["inputs"]["parameters"]["teacher_in_run"]["runtimeValue"]["constant"] is True
    # the family table comes last, as Markdown; GPU and resources as in the one-member graph
    assert upstream("family-table") >= {"summarise-member-4", "validate-data"}
    assert spec["components"]["comp-family-table"]["outputDefinitions"]["artifacts"]["table"]["artifactType"][
        "schemaTitle"] == "system.Markdown"
    executors = spec["deploymentSpec"]["executors"]
    on_gpu = {name for name, e in executors.items() if "accelerator" in e["container"].get("resources", {})}
    assert on_gpu == {f"exec-{s}{n}" for s in ("adapt-domain", "train-model") for n in ("", "-2", "-3", "-4")}
    assert platform["exec-start-member-run"]["activeDeadlineSeconds"] == "600"
