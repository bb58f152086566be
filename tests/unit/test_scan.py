"""The local scan runs the real ruff and bandit on a small tree."""

from pathlib import Path

from shipline.build.scan import run_local_scan
from shipline.spec import ScanSpec


def write_app(root: Path, *, clean: bool) -> None:
    (root / "app").mkdir()
    if clean:
        (root / "app" / "main.py").write_text("def add(a: int, b: int) -> int:\n    return a + b\n")
    else:
        (root / "app" / "main.py").write_text(
            "import os\nimport subprocess\n\n\ndef run(cmd):\n    return subprocess.call(cmd, shell=True)\n"
        )


def test_clean_code_passes_and_each_command_is_logged(tmp_path: Path) -> None:
    write_app(tmp_path, clean=True)
    said: list[str] = []
    report = run_local_scan(tmp_path, ScanSpec(paths=["app"]), log=said.append)
    assert report.passed and report.findings == []
    assert [line.split()[:2] for line in said] == [["$", "ruff"], ["$", "bandit"]]
    assert all(line.endswith(" app") for line in said)


def test_findings_over_threshold_fail_the_gate(tmp_path: Path) -> None:
    write_app(tmp_path, clean=False)
    report = run_local_scan(tmp_path, ScanSpec(paths=["app"]))
    assert ("ruff", "F401") in {(f.tool, f.rule) for f in report.findings}  # os imported, unused
    assert ("bandit", "B602") in {(f.tool, f.rule) for f in report.findings}  # shell=True
    assert not report.passed
    assert report.exceeded["ruff"] == (1, 0)
    assert report.exceeded["bandit-high"] == (1, 0)


def test_thresholds_from_the_spec_allow_findings(tmp_path: Path) -> None:
    write_app(tmp_path, clean=False)
    spec = ScanSpec(paths=["app"], max_findings={"ruff": 5, "bandit-high": 1, "bandit-low": 5})
    assert run_local_scan(tmp_path, spec).passed
