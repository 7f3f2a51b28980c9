# SPDX-License-Identifier: GPL-2.0-only
"""The Prometheus alerting rules: promtool checks them and runs their unit tests; they use only exported metrics.

The unit tests themselves (input series, the alerts expected at each time) are
tests/prometheus/crashhpd-alerts.test.yml, in promtool's own format.
"""

import re
import shutil
import subprocess
import sys
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
from repo_paths import REPO

from crashhpd.service.metrics import Metrics, families
from crashhpd.service.status import Status

RULES = REPO / "etc" / "prometheus" / "crashhpd-alerts.yml"
RULE_TESTS = REPO / "tests" / "prometheus" / "crashhpd-alerts.test.yml"



def promtool() -> str:
    """`sh .ci/setup` puts promtool into the virtualenv; one on PATH (Debian's prometheus package) does as well."""
    ours = Path(sys.prefix) / "bin" / "promtool"
    found = str(ours) if ours.is_file() else shutil.which("promtool")
    if found is None:
        pytest.skip(f"promtool is neither in {ours.parent} (sh .ci/setup puts it there) nor on PATH")
    return found


def run_promtool(*args: str) -> str:
    proc = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def rule_exprs(text: str) -> list[str]:
    """Every rule's `expr`, inline or a block scalar (`expr: |`) joined into one line."""
    lines = text.splitlines()
    exprs = []
    for i, line in enumerate(lines):
        m = re.match(r"(\s*)expr:\s*(.*)$", line)
        if m is None:
            continue
        indent, value = len(m.group(1)), m.group(2).strip()
        if value in ("|", "|-", ">", ">-"):
            block = []
            for following in lines[i + 1:]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                block.append(following.strip())
            value = " ".join(part for part in block if part)
        exprs.append(value)
    return exprs


def a_value(hint: object) -> object:
    """A value of a Status field's type; for `X | None`, an X, so that every optional family is built."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return a_value(next(arg for arg in typing.get_args(hint) if arg is not type(None)))
    origin = typing.get_origin(hint) or hint
    samples: dict[object, object] = {bool: True, int: 1, float: 1.0, str: "x", dict: {}, list: []}
    if origin not in samples:
        raise TypeError(f"no sample value for {hint!r}")
    return samples[origin]


def full_status() -> Status:
    """A Status with every field set, the optional ones too (a field of another type keeps its default)."""
    hints = typing.get_type_hints(Status)
    values = {}
    for f in fields(Status):
        try:
            values[f.name] = a_value(hints[f.name])
        except TypeError:
            if f.default is MISSING:
                raise
    values["readiness"] = [{"check": "x", "ok": True, "reason": "x"}]  # one check, so its family has a sample
    return Status(**values)


def exported_names() -> set[str]:
    """Every sample name crashhpd exports: the counters and gauges of a full status, and the two histograms."""
    metrics = Metrics(lambda: 2.0)
    collected = [*families(full_status(), 2.0), metrics.apply_duration.family(), metrics.event_to_apply.family()]
    return {sample.name for family in collected for sample in family.samples}


def test_promtool_accepts_the_rule_file():
    out = run_promtool("check", "rules", "--lint=all", "--lint-fatal", str(RULES))
    assert f"SUCCESS: {len(rule_exprs(RULES.read_text()))} rules found" in out, out


def test_the_alerts_fire_exactly_when_their_unit_tests_say():
    assert "SUCCESS" in run_promtool("test", "rules", str(RULE_TESTS))


def test_every_rule_has_an_expr_for_severity_and_both_annotations():
    text = RULES.read_text()
    rules = re.split(r"\n(?=      - (?:alert|record): )", text.split("    rules:\n", 1)[1])
    assert len(rules) == len(rule_exprs(text)) > 0
    for rule in rules:
        name = rule.split(":", 1)[1].split("\n", 1)[0].strip()
        for key in ("expr:", "for:", "severity:", "summary:", "description:"):
            assert f"\n        {key}" in rule or f"\n          {key}" in rule, f"{name} has no {key}"
        assert re.search(r"severity: (critical|warning|info)\n", rule), f"{name}: severity is not one of ours"


def test_every_crashhpd_metric_the_rules_use_is_exported():
    used = {name for expr in rule_exprs(RULES.read_text()) for name in re.findall(r"\bcrashhpd_[a-z_]+", expr)}
    assert "crashhpd_in_sync" in used, "the expressions were not read"
    assert sorted(used - exported_names()) == []


def test_the_exported_names_are_read_from_the_exporter():
    names = exported_names()
    assert {"crashhpd_errors_total", "crashhpd_last_apply_timestamp_seconds", "crashhpd_segment_fill_ratio",
            "crashhpd_apply_duration_seconds_bucket"} <= names
    assert "crashhpd_errors" not in names, "a counter is exported as <name>_total"


def test_the_expressions_are_read_inline_and_from_block_scalars():
    text = ("      - alert: A\n        expr: up == 0\n        for: 1m\n"
            "      - alert: B\n        expr: |\n          a_metric\n            unless b_metric\n        for: 1m\n")
    assert rule_exprs(text) == ["up == 0", "a_metric unless b_metric"]
