"""The data contract, as a Great Expectations suite run before any training.

Each expectation carries the property it guards. A failure raises DataValidationError whose
message names every failed expectation, the file it was checked on, and example offending values.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import pandas as pd

from ..config import ValidationParams
from .data import LABEL, TEXT

log = logging.getLogger(__name__)


@dataclass
class ExpectationOutcome:
    split: str
    source: str
    expectation: str
    column: str | None
    guards: str
    success: bool
    unexpected_count: int | None = None
    examples: list = field(default_factory=list)

    def describe(self) -> str:
        col = f"({self.column})" if self.column else ""
        detail = ""
        if self.unexpected_count is not None:
            detail = f": {self.unexpected_count} unexpected"
        if self.examples:
            detail += f", e.g. {self.examples[:5]!r}"
        return f"[{self.split}: {self.source}] {self.expectation}{col} — {self.guards}{detail}"


@dataclass
class ValidationReport:
    outcomes: list[ExpectationOutcome]

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def to_dict(self) -> dict:
        return {
            "success": self.success,
            "evaluated": len(self.outcomes),
            "failed": len(self.failures),
            "outcomes": [asdict(o) for o in self.outcomes],
        }

    def summary(self) -> str:
        lines = [f"Data validation: {len(self.outcomes) - len(self.failures)}/{len(self.outcomes)} expectations passed"]
        lines += [f"  FAILED {o.describe()}" for o in self.failures]
        return "\n".join(lines)


class DataValidationError(ValueError):
    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        super().__init__(report.summary())


def normalise(texts: pd.Series) -> pd.Series:
    """Case- and whitespace-insensitive key: 'Card  arrived?' and 'card arrived?' are one text."""
    return texts.str.casefold().str.split().str.join(" ")


def _split_suite(gxe, labels: list[str], params: ValidationParams, test_keys: list[str] | None):
    """(expectation, property guarded) for one split's rows."""
    suite = [
        (gxe.ExpectColumnToExist(column=TEXT), "the text column is present"),
        (gxe.ExpectColumnToExist(column=LABEL), "the label column is present"),
        (gxe.ExpectColumnValuesToNotBeNull(column=TEXT), "every row has a text"),
        (gxe.ExpectColumnValuesToNotMatchRegex(column=TEXT, regex=r"^\s*$"), "no empty or whitespace-only text"),
        (gxe.ExpectColumnValueLengthsToBeBetween(column=TEXT, min_value=1, max_value=params.max_chars),
         f"text length within 1..{params.max_chars} characters"),
        (gxe.ExpectColumnValuesToNotBeNull(column=LABEL), "every row has a label"),
        (gxe.ExpectColumnValuesToBeInSet(column=LABEL, value_set=labels), "labels belong to the known label set"),
        (gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(column="text_key", min_value=1.0 - params.max_duplicate_rate),
         f"at most {params.max_duplicate_rate:.1%} duplicate texts"),
    ]
    if test_keys is not None:
        suite.append((
            gxe.ExpectColumnValuesToNotBeInSet(column="text_key", value_set=test_keys, mostly=1.0 - params.max_overlap_rate),
            f"no leakage into the test set (at most {params.max_overlap_rate:.2%} overlap)",
        ))
    return suite


def _run(context, name: str, df: pd.DataFrame, suite, split: str, source: str) -> list[ExpectationOutcome]:
    import great_expectations as gx

    asset = context.data_sources.add_pandas(name=f"src_{name}").add_dataframe_asset(name=name)
    batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": df})
    for expectation, why in suite:
        expectation.meta = {"guards": why}  # GX may reorder results; the meta travels with each
    gx_suite = gx.ExpectationSuite(name=f"suite_{name}", expectations=[e for e, _ in suite])
    result = batch.validate(gx_suite, result_format="SUMMARY")
    outcomes = []
    for r in result.results:
        why = (r.expectation_config.meta or {}).get("guards", "")
        res = r.result or {}
        examples = res.get("partial_unexpected_list") or []
        if not r.success and r.exception_info and r.exception_info.get("raised_exception"):
            examples = [r.exception_info.get("exception_message")]
        outcomes.append(ExpectationOutcome(
            split=split, source=source, expectation=r.expectation_config.type,
            column=r.expectation_config.kwargs.get("column"), guards=why, success=bool(r.success),
            unexpected_count=res.get("unexpected_count"), examples=list(examples)[:5],
        ))
    return outcomes


def validate_splits(
    splits: dict[str, pd.DataFrame],
    sources: dict[str, str],
    labels: list[str],
    params: ValidationParams,
) -> ValidationReport:
    """Run the suite on train/val/test frames (columns text, label); raise if any expectation fails."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)

    test_keys = sorted(set(normalise(splits["test"][TEXT]))) if "test" in splits else None
    outcomes: list[ExpectationOutcome] = []
    for split, df in splits.items():
        framed = df.assign(text_key=normalise(df[TEXT].fillna("")))
        keys = test_keys if split != "test" else None
        outcomes += _run(context, split, framed, _split_suite(gxe, labels, params, keys), split, sources[split])

    # every known label has enough training examples (labels absent from train count as 0)
    counts = splits["train"][LABEL].value_counts().reindex(labels, fill_value=0)
    per_class = pd.DataFrame({"label": counts.index, "count": counts.values})
    class_suite = [(
        gxe.ExpectColumnValuesToBeBetween(column="count", min_value=params.min_per_class),
        f"at least {params.min_per_class} training examples per class",
    )]
    class_outcomes = _run(context, "class_counts", per_class, class_suite, "train", sources["train"])
    for o in class_outcomes:  # name the starved classes rather than their counts
        if not o.success:
            o.examples = per_class[per_class["count"] < params.min_per_class].apply(
                lambda r: f"{r['label']}: {r['count']}", axis=1).tolist()[:10]
    outcomes += class_outcomes

    report = ValidationReport(outcomes)
    log.info(report.summary())
    if not report.success:
        raise DataValidationError(report)
    return report
