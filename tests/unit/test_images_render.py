"""Dockerfiles of the middleware layers: FROM the OS by digest, installed and cleaned in one layer."""

from shipline.build.images import _render, middleware_names


def test_middleware_installs_and_cleans_in_one_layer() -> None:
    assert {"python3", "host-jre"} <= set(middleware_names())
    text = _render(
        "middleware/python3.Dockerfile.j2", os_image="r/shipline/os/debian@sha256:" + "b" * 64, version="3.11"
    )
    runs = [line for line in text.splitlines() if line.startswith("RUN")]
    assert len(runs) == 1
    assert "rm -rf /var/lib/apt/lists/*" in text
    # apt only warns when a suite cannot be fetched: the build must fail instead of missing security updates
    assert "apt-get update --error-on=any" in text
    assert text.startswith("FROM r/shipline/os/debian@sha256:")
