"""Deploy primitives on the real Docker Engine: compose up, health, rolling replacement, failures."""

from pathlib import Path

import httpx
import pytest

from shipline.build.registry import Registry
from shipline.config import Settings
from shipline.docker import docker_client
from shipline.errors import DeployError
from shipline.release.compose import ComposeFile, compose_file_for, render_compose
from shipline.release.deploy import compose_up, running_instances, stop_instances, wait_healthy
from shipline.release.plan import ReleaseRequest
from shipline.spec import ServiceSpec
from tests.images import busybox_web_image, free_ports, write

SLEEP = ["sleep", "300"]


@pytest.fixture(scope="module")
def image(settings: Settings) -> tuple[str, str]:
    client = docker_client(settings.docker_url)
    repository = f"{settings.registry_address}/apps/deploytest"
    digest = busybox_web_image(client, repository, "v1", {"healthz": "ok\n", "index.html": "hello\n"})
    return repository, digest


def compose_file(
    app: str, image: tuple[str, str], release: int, ports: list[int], **service: object
) -> ComposeFile:
    request = ReleaseRequest(
        app=app,
        env="pre",
        image=image[0],
        digest=image[1],
        sha="a" * 40,
        service=ServiceSpec.model_validate({"stop_grace_seconds": 2, **service}),
    )
    return compose_file_for(request, release, ports, pids_limit=1024)


def deploy(
    settings: Settings,
    tmp_path: Path,
    app: str,
    image: tuple[str, str],
    release: int,
    ports: list[int],
    **extra: object,
) -> Path:
    compose = compose_file(app, image, release, ports, **extra)
    path = write(tmp_path / f"release-{release}.yml", render_compose(compose))
    compose_up(path, project=compose.project, services=compose.service_names, docker_host=settings.docker_url)
    return path


def test_new_release_beside_the_old_then_old_stopped(
    settings: Settings, tmp_path: Path, app: str, image: tuple[str, str]
) -> None:
    client = docker_client(settings.docker_url)
    old_ports, new_ports = free_ports(2), free_ports(2)
    deploy(settings, tmp_path, app, image, 1, old_ports)
    wait_healthy(host="127.0.0.1", ports=old_ports, health_path="/healthz", timeout=30)
    deploy(settings, tmp_path, app, image, 2, new_ports)
    wait_healthy(host="127.0.0.1", ports=new_ports, health_path="/healthz", timeout=30)
    instances = running_instances(client, app=app, env="pre")
    assert [(i.release, i.port) for i in instances] == [(1, p) for p in sorted(old_ports)] + [
        (2, p) for p in sorted(new_ports)
    ]
    stop_instances(client, [i for i in instances if i.release == 1], grace_seconds=2)
    assert {i.release for i in running_instances(client, app=app, env="pre")} == {2}
    assert httpx.get(f"http://127.0.0.1:{new_ports[0]}/").text == "hello\n"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{old_ports[0]}/")


def test_instance_that_never_answers_is_named(settings: Settings, tmp_path: Path, app: str) -> None:
    (port,) = free_ports(1)
    repository = f"{settings.registry_address}/apps/deploytest"
    sleepy = busybox_web_image(docker_client(settings.docker_url), repository, "sleepy", {}, command=SLEEP)
    compose = compose_file(app, (repository, sleepy), 1, [port], stop_grace_seconds=1)
    path = write(tmp_path / "sleepy.yml", render_compose(compose))
    compose_up(path, project=compose.project, services=compose.service_names, docker_host=settings.docker_url)
    with pytest.raises(
        DeployError, match=rf"not healthy within 2s at /healthz: 127.0.0.1:{port} \(ConnectError\)"
    ):
        wait_healthy(host="127.0.0.1", ports=[port], health_path="/healthz", timeout=2)


def test_file_the_engine_rejects_is_a_clear_error(
    settings: Settings, tmp_path: Path, app: str, image: tuple[str, str]
) -> None:
    # Valid as a compose file, refused by the engine: more CPUs than this host has.
    with pytest.raises(DeployError, match=rf"docker compose up failed \({app}-\d+ not running\): .*CPUs"):
        deploy(settings, tmp_path, app, image, 1, free_ports(1), cpus=256)
    assert all(
        i.status != "running"
        for i in running_instances(docker_client(settings.docker_url), app=app, env="pre")
    )


def test_compose_pulls_an_image_only_the_registry_holds_with_its_login(
    settings: Settings, tmp_path: Path, app: str
) -> None:
    client = docker_client(settings.docker_url)
    repository = f"{settings.registry_address}/apps/deploypull"
    digest = busybox_web_image(client, repository, app, {"healthz": "ok\n"})  # a tag of its own: new content
    client.images.remove(f"{repository}:{app}", force=True)  # as on a PRE host: only the registry has it
    compose = compose_file(app, (repository, digest), 1, free_ports(1))
    path = write(tmp_path / "release-1.yml", render_compose(compose))
    empty = Registry(address=settings.registry_address).docker_config(tmp_path / "no-login")
    with pytest.raises(DeployError):
        compose_up(
            path,
            project=compose.project,
            services=compose.service_names,
            docker_host=settings.docker_url,
            docker_config=empty,
        )
    login = Registry.of_stack(settings).docker_config(tmp_path / "login")
    compose_up(
        path,
        project=compose.project,
        services=compose.service_names,
        docker_host=settings.docker_url,
        docker_config=login,
    )
    wait_healthy(host="127.0.0.1", ports=compose.ports, health_path="/healthz", timeout=30)
