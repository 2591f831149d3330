"""The pipeline console's pieces without a run: progress events, the time-left estimate, task lines."""
import io
import json

import pytest

from yanjin import progress
from yanjin.pipelines.console import Console, Estimate, StepStream


def test_a_watched_loop_reports_json_lines_not_bar_ticks(tmp_path, monkeypatch):
    path = tmp_path / "progress.jsonl"
    monkeypatch.setenv(progress.PROGRESS_ENV, str(path))
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    bar = progress.bar(range(5), "epoch 1/2")
    for _ in bar:
        bar.set_postfix(loss="0.5")
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["n"] for e in events] == [1, 2, 3, 4, 5] and events[-1]["total"] == 5
    assert events[-1]["desc"] == "epoch 1/2" and events[-1]["postfix"] == "loss 0.5"


def test_the_estimate_waits_for_a_basis_then_uses_this_run_and_earlier_ones():
    tasks = ["validate-data", "train-model", "export-model", "train-model-2", "export-model-2"]
    fresh = Estimate(tasks)
    assert fresh.left(None, 0.0, None) is None                      # nothing measured yet: no guess
    fresh.done |= {"validate-data": 10.0}
    # a first training loop half done after 30 s: 30 s to go, the second one as long as it, and the exports
    # (not seen yet) as long as the light steps seen so far
    assert fresh.left("train-model", 30.0, 0.5) == pytest.approx(30.0 + 10.0 + 60.0 + 10.0)
    assert fresh.left("train-model", 30.0, None) is None              # no bar yet: no basis for a training step
    fresh.done |= {"train-model": 60.0, "export-model": 4.0}
    # running the second loop a quarter done after 20 s: 60 s to go, then one export like the first
    assert fresh.left("train-model-2", 20.0, 0.25) == pytest.approx(60.0 + 4.0)
    # no bar yet: the mean of its kind, less what already ran
    assert fresh.left("train-model-2", 20.0, None) == pytest.approx(40.0 + 4.0)
    remembered = Estimate(tasks, history={t: 5.0 for t in tasks})
    assert remembered.left(None, 0.0, None) == pytest.approx(25.0)


def test_task_lines_become_step_lines_and_everything_reaches_the_log():
    screen, log = io.StringIO(), io.StringIO()
    console = Console(screen, {"train-model": "v1: Fine-tune"}, Estimate(["train-model"]))
    stream = StepStream(log, console, echo=None)
    stream.write("12:00:00.000 - INFO - Executing task \x1b[96m'train-model'\x1b[0m\n    [KFP Executor] chatter\n")
    console.event({"kind": "note", "text": "epoch 1: val accuracy 0.9"})
    stream.write("12:00:09.000 - INFO - Task \x1b[96m'train-model'\x1b[0m finished with status \x1b[92mFAILURE\x1b[0m\n")
    lines = screen.getvalue().splitlines()
    assert lines[0] == "  … v1: Fine-tune" and lines[1].strip() == "epoch 1: val accuracy 0.9"
    assert lines[2].startswith("  ✗ v1: Fine-tune") and lines[2].endswith("FAILURE")
    assert "chatter" in log.getvalue() and "chatter" not in screen.getvalue()
    assert console.failed == ["train-model"] and "    [KFP Executor] chatter" in stream.task_lines["train-model"]
