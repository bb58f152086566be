"""JUnit XML reports (pytest, JUnit, Surefire …) as a summary: counts, failures, slowest tests."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from pydantic import BaseModel

from shipline.errors import TestFailure


class TestCase(BaseModel):
    __test__ = False
    name: str
    seconds: float
    outcome: str
    """passed, failed, error or skipped."""
    message: str = ""


class TestSummary(BaseModel):
    __test__ = False
    passed: int
    failed: int
    errors: int
    skipped: int
    seconds: float
    failures: list[TestCase]
    slowest: list[TestCase]

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.errors + self.skipped

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.errors == 0


def _case(element: ET.Element) -> TestCase:
    classname = element.get("classname", "")
    name = f"{classname}.{element.get('name', '?')}" if classname else element.get("name", "?")
    seconds = float(element.get("time", "0") or 0)
    for outcome in ("failure", "error", "skipped"):
        child = element.find(outcome)
        if child is not None:
            message = (child.get("message") or child.text or "").strip().splitlines()
            return TestCase(
                name=name,
                seconds=seconds,
                outcome={"failure": "failed"}.get(outcome, outcome),
                message=message[0][:500] if message else "",
            )
    return TestCase(name=name, seconds=seconds, outcome="passed")


def parse_junit(path: Path, *, slowest: int = 5) -> TestSummary:
    """Summarise the JUnit report at ``path``.

    Raises:
        TestFailure: if the report is missing or not JUnit XML.
    """
    try:
        root = ET.parse(path).getroot()  # noqa: S314 - the app's own report, not remote input
    except FileNotFoundError as exc:
        raise TestFailure(
            f"the test command left no JUnit report at {path.name}", hint="check test.junit in shipline.yaml"
        ) from exc
    except ET.ParseError as exc:
        raise TestFailure(f"{path.name} is not JUnit XML: {exc}") from exc
    cases = [_case(element) for element in root.iter("testcase")]
    counts = {
        outcome: sum(1 for c in cases if c.outcome == outcome)
        for outcome in ("passed", "failed", "error", "skipped")
    }
    return TestSummary(
        passed=counts["passed"],
        failed=counts["failed"],
        errors=counts["error"],
        skipped=counts["skipped"],
        seconds=sum(c.seconds for c in cases),
        failures=[c for c in cases if c.outcome in {"failed", "error"}],
        slowest=sorted(cases, key=lambda c: c.seconds, reverse=True)[:slowest],
    )
