"""Validate: a pandera schema derived from config, run lazily so one report lists every problem."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from flowship.config import ColumnRule, Params
from flowship.errors import DataValidationError

MAX_EXAMPLES = 5


def _null_fraction_check(limit: float) -> pa.Check:
    return pa.Check(
        lambda s: bool(s.isna().mean() <= limit),
        element_wise=False,
        ignore_na=False,
        name=f"max_null_fraction={limit}",
    )


def _checks(rule: ColumnRule) -> list[pa.Check]:
    checks = []
    if rule.min is not None:
        checks.append(pa.Check.ge(rule.min))
    if rule.max is not None:
        checks.append(pa.Check.le(rule.max))
    if rule.categories is not None:
        checks.append(pa.Check.isin(rule.categories))
    return checks


def build_schema(params: Params) -> pa.DataFrameSchema:
    data, rules = params.data, params.validate_.columns
    columns: dict[str, pa.Column] = {}
    for dtype, names in (("float64", data.features.numeric), ("string", data.features.categorical)):
        for name in names:
            checks = [_null_fraction_check(params.validate_.null_limit(name)), *_checks(rules.get(name, ColumnRule()))]
            columns[name] = pa.Column(dtype, checks=checks, nullable=True, coerce=True)
    # The target's missing values are not checked here: ingest leaves those rows out and counts them.
    target_checks = _checks(rules.get(data.target.column, ColumnRule()))
    if data.task == "classification":
        target_checks.append(
            pa.Check(
                lambda s: s.nunique() > 1,
                element_wise=False,
                name="at_least_two_classes",
            )
        )
        columns[data.target.column] = pa.Column(None, checks=target_checks, nullable=False)
    else:
        columns[data.target.column] = pa.Column("float64", checks=target_checks, nullable=False, coerce=True)
    return pa.DataFrameSchema(
        columns,
        checks=[
            pa.Check(
                lambda df: len(df) >= params.validate_.min_rows,
                element_wise=False,
                name=f"min_rows={params.validate_.min_rows}",
            )
        ],
        strict=False,
    )


def _failures(errors: SchemaErrors, frame: pd.DataFrame, target: str) -> list[dict[str, Any]]:
    cases = errors.failure_cases
    not_coercible = set(cases.loc[cases["check"].astype(str).str.startswith("coerce_dtype"), "column"])
    failures = []
    for (column, check), group in cases.groupby(["column", "check"], dropna=False, sort=False):
        check = str(check)
        values = group["failure_case"].tolist()
        column_name = "<table>" if column is None or pd.isna(column) else str(column)
        if column in not_coercible and not check.startswith("coerce_dtype"):
            # Range checks on a column that is not numeric only repeat the type error.
            continue
        count = len(values)
        if check.startswith("max_null_fraction") and column_name in frame.columns:
            count = int(frame[column_name].isna().sum())
            values = [f"{count} of {len(frame)} values missing"]
        elif check.startswith("min_rows"):
            count, values = len(frame), [f"{len(frame)} rows"]
        elif check == "at_least_two_classes" and target in frame.columns:
            count, values = len(frame), [f"classes: {sorted(map(str, frame[target].dropna().unique()))}"]
        elif check == "column_in_dataframe":
            column_name, count, values = ", ".join(map(str, values)), len(values), ["column missing"]
        failures.append(
            {
                "column": column_name,
                "check": str(check),
                "count": count,
                "examples": [v if isinstance(v, (int, float, str)) else str(v) for v in values[:MAX_EXAMPLES]],
            }
        )
    return failures


def validate(frame: pd.DataFrame, params: Params, target_missing: int = 0) -> dict[str, Any]:
    """A report of the checks; raises `DataValidationError` (carrying it) when any fails. `target_missing`: rows of
    the source that ingest left out for want of a target value, said in the report."""
    schema = build_schema(params)
    report: dict[str, Any] = {
        "rows": len(frame),
        "target_missing": target_missing,
        "columns": list(schema.columns),
        "failures": [],
    }
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as errors:
        report["failures"] = _failures(errors, frame, params.data.target.column)
        report["valid"] = False
        raise DataValidationError(report) from None
    report["valid"] = True
    return report
