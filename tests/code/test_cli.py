"""The command line documents every option and reports missing data clearly."""
from typer.testing import CliRunner

from yanjin.cli import app

runner = CliRunner()


def test_every_pipeline_run_option_has_help():
    out = runner.invoke(app, ["pipeline", "run", "--help"], env={"COLUMNS": "200"}).output
    for option, help_text in (("--profile", "Config profile"), ("--variant", "Family member"),
                              ("--corpus", "Unlabeled in-domain text"), ("--set", "Override a config field"),
                              ("--data", "Folder with train.csv"), ("--train", "Training CSV/Parquet"),
                              ("--test", "Test CSV/Parquet"), ("--labels", "JSON list of known labels"),
                              ("--state-dir", "embedded-mode state"), ("--tracking-uri", "MLflow tracking URI"),
                              ("--metrics-out", "evaluation figures as JSON")):
        assert option in out and help_text in out, option


def test_missing_data_folder_is_explained(tmp_path):
    result = runner.invoke(app, ["pipeline", "run", "--profile", "tiny", "--data", str(tmp_path / "none"),
                                 "--state-dir", str(tmp_path / "s")],
                           env={"YANJIN_DATA": str(tmp_path / "none"), "COLUMNS": "300"})
    assert result.exit_code == 2 and "no train.csv in this folder" in result.output


def test_compile_writes_yaml(tmp_path):
    result = runner.invoke(app, ["pipeline", "compile", "--output", str(tmp_path / "p.yaml"), "--image", "r/y:1"])
    assert result.exit_code == 0 and (tmp_path / "p.yaml").read_text().count("image: r/y:1") == 9  # one per step (resolve, and register and its rejected branch, included)


def test_every_bench_family_option_has_help():
    out = runner.invoke(app, ["bench", "family", "--help"], env={"COLUMNS": "200"}).output
    for option, help_text in (("--state-dir", "Embedded-mode state"), ("--tracking-uri", "MLflow tracking URI"),
                              ("--model-name", "Registered models are"), ("--variants", "Comma-separated family"),
                              ("--data", "Folder with train.csv"), ("--output-dir", "family.json"),
                              ("--latency-runs", "Batch-1 requests"), ("--throughput-batches", "Batch-32 calls")):
        assert option in out and help_text in out, option


def test_bench_family_without_registered_versions_says_what_to_run(tmp_path, data_dir):
    result = runner.invoke(app, ["bench", "family", "--state-dir", str(tmp_path / "s"), "--data", str(data_dir),
                                 "--output-dir", str(tmp_path / "out"), "--latency-runs", "10"],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 1 and "run `yanjin pipeline run --variant all` first" in result.output


def test_submit_sends_what_the_package_takes_and_refuses_a_mismatch(tmp_path):
    from yanjin.config import load_config
    from yanjin.pipelines.remote import package_parameters, pipeline_arguments

    member, family = tmp_path / "member.yaml", tmp_path / "family.yaml"
    refused = runner.invoke(app, ["pipeline", "compile", "--output", str(member)], env={"COLUMNS": "300"})
    assert refused.exit_code == 2 and "--image-default" in refused.output and not member.exists()
    assert runner.invoke(app, ["pipeline", "compile", "--image-default", "--output", str(member)]).exit_code == 0
    assert runner.invoke(app, ["pipeline", "compile", "--image-default", "--family", "--output", str(family)]).exit_code == 0
    config, data = load_config("full"), {"train_data": "s3://b/train.csv", "test_data": "s3://b/test.csv"}
    assert set(pipeline_arguments(config, "banking77-v1", data, package_parameters(member))) == {
        "config_json", "registered_model", "train_data", "test_data"}
    assert set(pipeline_arguments(config, "banking77-v1", data, package_parameters(family))) == {
        "config_json", "train_data", "test_data"}  # each branch names its own model
    for package, variant, message in ((family, "v1", "is the family pipeline: pass --variant all"),
                                      (member, "all", "is the one-member pipeline")):
        out = runner.invoke(app, ["pipeline", "submit", "--host", "http://127.0.0.1:9", "--package", str(package),
                                  "--variant", variant], env={"COLUMNS": "300"})
        assert out.exit_code == 2 and message in out.output, out.output
    out = runner.invoke(app, ["pipeline", "submit", "--host", "http://127.0.0.1:9", "--package", str(family),
                              "--variant", "all", "--param", "member=pro"], env={"COLUMNS": "300"})
    assert out.exit_code == 2 and "takes no parameter ['member']" in out.output, out.output


def test_an_error_is_one_message_with_the_next_step_and_debug_shows_the_traceback(tmp_path):
    """Run as a user does (the installed entry point's module), from another folder."""
    import subprocess
    import sys

    args = [sys.executable, "-m", "yanjin.cli", "history", "no-such-model", "--state-dir", str(tmp_path / "state"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    plain = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr, plain.stderr
    lines = [line for line in plain.stderr.splitlines() if line.strip() and "INFO" not in line]
    assert lines[0].startswith("error: ") and "no-such-model" in lines[0], plain.stderr
    assert lines[1].strip().startswith("next: see what is registered: yanjin status") and len(lines) == 2
    debug = subprocess.run(args + ["--debug"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_read_only_commands_in_a_folder_without_state_create_nothing_and_say_where_they_looked(tmp_path):
    """`yanjin status` from another folder used to create an empty registry and report nothing registered."""
    from importlib.metadata import version

    runner = CliRunner()
    env = {"COLUMNS": "300", "MLFLOW_TRACKING_URI": None}
    for args in (["status"], ["history", "banking77-v1"], ["card", "banking77-v1", "1"], ["review", "list"]):
        out = runner.invoke(app, args + ["--state-dir", str(tmp_path / ".yanjin")], env=env)
        assert out.exit_code == 1 and f"no yanjin state in {tmp_path / '.yanjin'}" in out.output, (args, out.output)
        assert "--state-dir" in out.output
    assert list(tmp_path.iterdir()) == []                                  # nothing was created by looking
    shown = runner.invoke(app, ["--version"])
    assert shown.exit_code == 0 and shown.output.startswith(f"yanjin {version('yanjin')} (code ")
