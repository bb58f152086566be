"""Dockerfiles of the layers: FROM by digest, only the artifact copied, labels last."""

from shipline.build.images import _render, middleware_names


def test_app_dockerfile_copies_only_the_artifact_and_puts_labels_last() -> None:
    text = _render(
        "app.Dockerfile.j2",
        middleware_image="127.0.0.1:5000/shipline/middleware/python3@sha256:" + "a" * 64,
        workdir="/srv",
        copy_to="/srv/app",
        command=["python3", "-m", "app"],
        labels={"org.opencontainers.image.revision": "abc", "shipline.app": "shop"},
    )
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "FROM 127.0.0.1:5000/shipline/middleware/python3@sha256:" + "a" * 64
    assert "COPY artifact /srv/app" in lines
    assert 'CMD ["python3", "-m", "app"]' in lines
    assert lines[-1].startswith('LABEL "org.opencontainers.image.revision"="abc" "shipline.app"="shop"')
    assert sum(line.startswith(("COPY", "ADD", "RUN")) for line in lines) == 1


def test_middleware_installs_and_cleans_in_one_layer() -> None:
    assert {"python3", "host-jre"} <= set(middleware_names())
    text = _render(
        "middleware/python3.Dockerfile.j2", os_image="r/shipline/os/debian@sha256:" + "b" * 64, version="3.11"
    )
    runs = [line for line in text.splitlines() if line.startswith("RUN")]
    assert len(runs) == 1
    assert "rm -rf /var/lib/apt/lists/*" in text
    assert text.startswith("FROM r/shipline/os/debian@sha256:")
