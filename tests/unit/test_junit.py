from pathlib import Path

import pytest

from shipline.build.junit import parse_junit
from shipline.errors import TestFailure

REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="5">
  <testcase classname="tests.test_a" name="test_ok" time="0.010"/>
  <testcase classname="tests.test_a" name="test_slow" time="2.500"/>
  <testcase classname="tests.test_a" name="test_bad" time="0.200">
    <failure message="assert 1 == 2">long traceback</failure></testcase>
  <testcase classname="tests.test_b" name="test_boom" time="0.100">
    <error message="ImportError: x"/></testcase>
  <testcase classname="tests.test_b" name="test_later" time="0"><skipped message="not yet"/></testcase>
</testsuite></testsuites>
"""


def test_counts_failures_and_slowest(tmp_path: Path) -> None:
    (tmp_path / "junit.xml").write_text(REPORT)
    summary = parse_junit(tmp_path / "junit.xml", slowest=2)
    assert (summary.passed, summary.failed, summary.errors, summary.skipped) == (2, 1, 1, 1)
    assert not summary.ok
    assert [(f.name, f.message) for f in summary.failures] == [
        ("tests.test_a.test_bad", "assert 1 == 2"),
        ("tests.test_b.test_boom", "ImportError: x"),
    ]
    assert [s.name for s in summary.slowest] == ["tests.test_a.test_slow", "tests.test_a.test_bad"]


def test_missing_or_broken_report(tmp_path: Path) -> None:
    with pytest.raises(TestFailure, match="left no JUnit report"):
        parse_junit(tmp_path / "none.xml")
    (tmp_path / "bad.xml").write_text("<testsuite><testcase")
    with pytest.raises(TestFailure, match="not JUnit XML"):
        parse_junit(tmp_path / "bad.xml")
