"""Which base layer a build uses: the digest Shipline recorded, never what a tag points at (fake registry)."""

import json
from datetime import UTC, datetime

import pytest

from shipline.build.base_layers import (
    BaseLayerRecord,
    LayerKind,
    record_built,
    record_key,
    recorded_layer,
)
from shipline.build.registry import PushedImage
from shipline.errors import BuildError
from shipline.spec import LayerRef
from tests.fake_registry import FakeRegistry

MIDDLEWARE = LayerRef(name="python3", version="3.11")
NAME = "shipline/middleware/python3"
OS_DIGEST = "sha256:" + "0" * 64
BUILT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


class MemoryRecords:
    """Records in a dict, as etcd keeps them: JSON under their key."""

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}

    def get(self, kind: LayerKind, layer: LayerRef) -> BaseLayerRecord | None:
        value = self.values.get(record_key(kind, layer))
        return None if value is None else BaseLayerRecord.model_validate_json(value)

    def put(self, kind: LayerKind, layer: LayerRef, record: BaseLayerRecord) -> None:
        self.values[record_key(kind, layer)] = record.to_json()


class Decision:
    """A registry holding the middleware Shipline built (tag and record agree), and what was logged."""

    def __init__(self) -> None:
        self.fake = FakeRegistry()
        self.registry = self.fake.registry()
        self.records = MemoryRecords()
        self.logged: list[str] = []
        self.warned: list[str] = []
        self.built = self.fake.push(NAME, "3.11", created=BUILT, layers={"os": 10, "python": 20})
        self.repository = f"{self.fake.address}/{NAME}"

    def record(self, digest: str, *, repository: str | None = None, parent: str | None = OS_DIGEST) -> None:
        image = PushedImage(repository=repository or self.repository, tag="3.11", digest=digest)
        record_built(self.records, kind=LayerKind.MIDDLEWARE, layer=MIDDLEWARE, image=image, parent=parent)

    def decide(self, parent: str = OS_DIGEST) -> PushedImage | None:
        return recorded_layer(
            self.registry,
            self.records,
            kind=LayerKind.MIDDLEWARE,
            layer=MIDDLEWARE,
            parent=parent,
            log=self.logged.append,
            warn=self.warned.append,
            transport=self.fake.transport(),
        )


@pytest.fixture
def decision() -> Decision:
    return Decision()


def test_a_record_is_json_under_its_kind_name_and_version(decision: Decision) -> None:
    decision.record(decision.built)
    (key,) = decision.records.values
    assert key == b"/shipline/base-layers/middleware/python3/3.11"
    value = json.loads(decision.records.values[key])
    assert set(value) == {"repository", "digest", "built_at", "from"}
    assert (value["repository"], value["digest"], value["from"]) == (
        decision.repository,
        decision.built,
        OS_DIGEST,
    )


def test_the_recorded_layer_is_reused_when_its_tag_agrees(decision: Decision) -> None:
    decision.record(decision.built)
    assert decision.decide() == PushedImage(repository=decision.repository, tag="3.11", digest=decision.built)
    assert decision.logged[0].startswith(f"reusing {decision.repository}:3.11 ({decision.built}")
    assert decision.warned == []


def test_a_tag_pushed_over_is_not_used_and_is_reported(decision: Decision) -> None:
    decision.record(decision.built)
    pushed = decision.fake.push(NAME, "3.11", created=BUILT, layers={"os": 10, "evil": 1})
    reused = decision.decide()
    assert reused is not None and reused.digest == decision.built
    (warning,) = decision.warned
    assert f"the tag {decision.repository}:3.11 points at {pushed}, not at {decision.built}" in warning
    assert "someone pushed over it" in warning and "rebuild-base-layers" in warning


def test_a_deleted_tag_is_reported_and_the_recorded_digest_used(decision: Decision) -> None:
    decision.record(decision.built)
    del decision.fake.tags[NAME]["3.11"]
    reused = decision.decide()
    assert reused is not None and reused.digest == decision.built
    (warning,) = decision.warned
    assert f"the tag {decision.repository}:3.11 is gone, not at {decision.built}" in warning


def test_a_recorded_digest_gone_from_the_registry_fails_the_stage(decision: Decision) -> None:
    decision.record(decision.built)
    decision.fake.push(NAME, "3.11", created=BUILT, layers={"evil": 1})
    del decision.fake.manifests[NAME][decision.built]
    with pytest.raises(BuildError) as caught:
        decision.decide()
    assert caught.value.message == (
        f"the middleware layer python3 3.11: its recorded digest {decision.built} is no longer in the "
        f"registry ({decision.repository})"
    )
    assert caught.value.hint and "rebuild-base-layers" in caught.value.hint
    assert not caught.value.transient


def test_without_a_record_the_layer_is_built_even_if_a_tag_exists(decision: Decision) -> None:
    assert decision.decide() is None  # the tag someone pushed is never adopted
    assert decision.logged == [
        f"{decision.repository}:3.11: no record of a build by Shipline in this registry: building it"
    ]


def test_a_record_of_another_registry_counts_as_none(decision: Decision) -> None:
    decision.record(decision.built, repository=f"elsewhere.test:5000/{NAME}")
    assert decision.decide() is None


def test_middleware_recorded_on_another_os_image_is_built_again(decision: Decision) -> None:
    decision.record(decision.built, parent="sha256:" + "1" * 64)
    assert decision.decide(parent=OS_DIGEST) is None
    assert "building it again" in decision.logged[0]
