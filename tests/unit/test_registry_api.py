"""RegistryAPI against a fake Distribution registry: paging, manifests, image configs, deletes, failures."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from shipline.build.registry import Registry
from shipline.errors import RegistryError, ServiceUnavailableError
from tests.fake_registry import FakeRegistry, layer_digest

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def fake() -> FakeRegistry:
    fake = FakeRegistry()
    for n, app in enumerate(["a", "b", "c", "d", "e"]):
        fake.push(f"apps/{app}", "v1", created=T0.replace(day=n + 1), layers={"base": 100, app: 10})
    return fake


def test_the_catalog_and_tag_lists_are_read_across_pages(fake: FakeRegistry) -> None:
    for n in range(5):
        fake.push("apps/a", f"v{n + 2}", created=T0, layers={f"a{n}": 1})
    with fake.registry().api(transport=fake.transport()) as api:
        assert api.repositories() == [f"apps/{app}" for app in "abcde"]
        assert sorted(api.tags("apps/a")) == [f"v{n}" for n in range(1, 7)]
        assert api.tags("apps/nothing") == []


def test_a_manifest_by_tag_names_its_digest_config_and_layers(fake: FakeRegistry) -> None:
    with fake.registry().api(transport=fake.transport()) as api:
        manifest = api.manifest("apps/b", "v1")
        assert manifest is not None
        assert manifest.digest == fake.tags_of("apps/b")["v1"]
        assert [layer.digest for layer in manifest.layers] == [layer_digest("base"), layer_digest("b")]
        assert [blob.size for blob in manifest.blobs][1:] == [100, 10]
        assert not manifest.is_index
        assert api.image_created(manifest) == T0.replace(day=2)
        assert api.manifest("apps/b", "v9") is None
        assert api.manifest("apps/b", manifest.digest) == manifest


def test_docker_times_in_nanoseconds_are_read() -> None:
    config = b'{"created": "2026-11-25T17:17:44.886130757Z"}'

    def answer(request: httpx.Request) -> httpx.Response:
        if "/manifests/" in request.url.path:
            document = {"mediaType": "m", "config": {"digest": "sha256:c", "size": 3}, "layers": []}
            return httpx.Response(200, json=document, headers={"Docker-Content-Digest": "sha256:m"})
        return httpx.Response(200, content=config)

    with Registry(address="r:5000").api(transport=httpx.MockTransport(answer)) as api:
        manifest = api.manifest("apps/x", "v1")
        assert manifest is not None
        assert api.image_created(manifest) == datetime(2026, 11, 25, 17, 17, 44, 886130, tzinfo=UTC)


def test_an_index_is_told_from_an_image() -> None:
    document = {
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"digest": "sha256:amd64"}, {"digest": "sha256:arm64"}],
    }
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=document))
    with Registry(address="r:5000").api(transport=transport) as api:
        manifest = api.manifest("apps/x", "v1")
    assert manifest is not None and manifest.is_index
    assert manifest.manifests == ["sha256:amd64", "sha256:arm64"] and manifest.blobs == []
    assert manifest.digest.startswith("sha256:")  # computed from the body when the header is missing


def test_a_deleted_manifest_takes_its_tags_and_a_second_delete_finds_nothing(fake: FakeRegistry) -> None:
    digest = fake.tags_of("apps/c")["v1"]
    fake.tags["apps/c"]["also"] = digest
    fake.push("apps/c", "v2", created=T0, layers={"c2": 5})
    with fake.registry().api(transport=fake.transport()) as api:
        assert api.delete_manifest("apps/c", digest) is True
        assert api.tags("apps/c") == ["v2"]
        assert api.manifest("apps/c", digest) is None
        assert api.delete_manifest("apps/c", digest) is False


def test_a_registry_that_refuses_deletes_says_how_to_enable_them(fake: FakeRegistry) -> None:
    fake.deletes_enabled = False
    with fake.registry().api(transport=fake.transport()) as api, pytest.raises(RegistryError) as refused:
        api.delete_manifest("apps/a", fake.tags_of("apps/a")["v1"])
    assert "405" in refused.value.message and "registry.test:5000" in refused.value.message
    assert refused.value.hint and "delete" in refused.value.hint
    assert not refused.value.transient


def test_a_server_error_is_transient_and_carries_the_body() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(503, text="storage backend down"))
    with Registry(address="r:5000").api(transport=transport) as api, pytest.raises(RegistryError) as failed:
        api.repositories()
    assert failed.value.transient
    assert "503" in failed.value.message and "storage backend down" in failed.value.message


def test_a_registry_that_does_not_answer_is_named() -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    api = Registry(address="r:5000").api(transport=httpx.MockTransport(unreachable))
    with api, pytest.raises(ServiceUnavailableError, match="registry r:5000 does not answer") as down:
        api.tags("apps/a")
    assert down.value.transient


def test_credentials_go_as_basic_auth() -> None:
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(200, json={"repositories": []})

    registry = Registry.model_validate({"address": "r:5000", "username": "ci", "password": "s3cret"})
    with registry.api(transport=httpx.MockTransport(answer)) as api:
        api.repositories()
    assert seen == [httpx.BasicAuth("ci", "s3cret")._auth_header]
