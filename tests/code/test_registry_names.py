"""One module owns the registry's names: no alias, tag key or registry prefix is typed anywhere else."""
import ast
from dataclasses import fields
from pathlib import Path

from yanjin import registry as R

ROOT = Path(__file__).resolve().parents[2]
ALIASES = {R.CHAMPION, R.CHALLENGER}
PREFIXES = (R.AUDIT_PREFIX, R.LOCK_PREFIX, R.SHARE_TAG, R.ROLLOUT_TAG, R.LEDGER_HEAD_TAG, R.MONITOR_STATE_TAG, "models:/")
TAG_KEYS = ({f.name for f in fields(R.VersionTags)} | {R.ROLLOUT_OUTCOME, R.ROLLOUT_REASON, R.DRIFT_THRESHOLDS,
            R.RETRAINING_REASON, R.FEEDBACK_ROWS, R.FEEDBACK_DROPPED, R.RUN_GATE, R.RUN_VALIDATION, R.RUN_PIPELINE})
TAG_SETTERS = {"set_tag", "set_model_version_tag", "set_registered_model_tag", "delete_model_version_tag",
               "delete_registered_model_tag", "get_model_version_by_alias", "set_registered_model_alias",
               "delete_registered_model_alias"}


def literals_in_tag_contexts(tree: ast.AST):
    """(line, text) of every string typed where a tag key or an alias goes."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in ALIASES or node.value.startswith(PREFIXES):
                yield node.lineno, node.value
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            args = list(node.args)
            if name in TAG_SETTERS or (name == "get" and _on_tags(node.func.value)):
                yield from ((a.lineno, a.value) for a in args if isinstance(a, ast.Constant) and a.value in TAG_KEYS)
            if name == "set_tags" and args and isinstance(args[0], ast.Dict):
                yield from ((k.lineno, k.value) for k in args[0].keys
                            if isinstance(k, ast.Constant) and k.value in TAG_KEYS)
        if isinstance(node, ast.Subscript) and _on_tags(node.value) and isinstance(node.slice, ast.Constant):
            if node.slice.value in TAG_KEYS:
                yield node.lineno, node.slice.value


def _on_tags(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "tags"


def test_no_alias_or_tag_literal_outside_the_registry_module():
    offenders = []
    for path in sorted([*(ROOT / "yanjin").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]):
        if path == ROOT / "yanjin" / "registry" / "names.py":
            continue
        for line, text in literals_in_tag_contexts(ast.parse(path.read_text())):
            offenders.append(f"{path.relative_to(ROOT)}:{line}: {text!r}")
    assert not offenders, "use the names in yanjin/registry/names.py:\n" + "\n".join(offenders)


def test_the_check_finds_what_it_looks_for():
    bad = ast.parse('c.set_registered_model_alias(m, "champion", v)\nmv.tags.get("artifact_sha256")\n'
                    'mv.tags["config"]\nmlflow.set_tags({"gate": "passed"})\nt = "yanjin.rollout"\n')
    assert {text for _, text in literals_in_tag_contexts(bad)} == {"champion", "artifact_sha256", "config", "gate",
                                                                    "yanjin.rollout"}
