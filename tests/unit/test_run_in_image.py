"""A command in an image logs what it runs; a failure repeats its last lines (the build stages' errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipline.docker import TAIL_LINES, run_in_image


class FakeContainer:
    def __init__(self, output: bytes, code: int) -> None:
        self.output, self.code, self.removed = output, code, False

    def logs(self, *, stream: bool, follow: bool) -> list[bytes]:
        return [self.output[:7], self.output[7:]]  # chunks that cut lines, as a stream does

    def wait(self, *, timeout: float) -> dict[str, Any]:
        return {"StatusCode": self.code}

    def remove(self, *, force: bool) -> None:
        self.removed = True


class FakeClient:
    def __init__(self, container: FakeContainer) -> None:
        self.container = container
        self.containers = self

    def run(self, *args: Any, **kwargs: Any) -> FakeContainer:
        return self.container


def test_the_command_is_logged_and_a_failure_keeps_the_last_lines(tmp_path: Path) -> None:
    output = "".join(f"line {i}\n" for i in range(50)).encode()
    container = FakeContainer(output, code=3)
    logged: list[str] = []
    done = run_in_image(
        FakeClient(container),
        image="registry/mw@sha256:abc",
        command="make all",
        workspace=tmp_path,
        mounts=[],
        log=logged.append,
    )
    assert logged[0] == "$ make all    (in registry/mw@sha256:abc, as 65534:65534, network none)"
    assert done.code == 3
    assert len(done.tail) == TAIL_LINES and done.tail[-1] == "line 49"
    assert "  | line 49" in done.tail_text()
    assert container.removed
