from pathlib import Path

from shipline.release.plan import request_from_spec
from shipline.spec import load_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello-python"


def test_request_takes_the_environment_s_settings_from_the_spec_itself() -> None:
    spec = load_spec(EXAMPLE)
    prod = request_from_spec(
        spec,
        env="prod",
        image="r/apps/hello-python",
        digest="sha256:" + "c" * 64,
        sha="d" * 40,
        committed=None,
    )
    assert prod.service == spec.service  # one model: the spec's own section, not a copy field by field
    assert prod.replicas(default=1) == 2
    assert prod.settings.environment == {"GREETING": "hello from PROD"}
    assert [check.path for check in prod.auto_tests.http] == ["/healthz", "/version"]
    other = request_from_spec(
        spec, env="qa", image="r", digest="sha256:" + "c" * 64, sha="d" * 40, committed=None
    )
    assert other.replicas(default=3) == 3 and other.settings.environment == {}


def test_an_app_can_add_an_approval_gate_but_never_lift_the_operators() -> None:
    from shipline.release.plan import ReleaseRequest
    from shipline.spec import EnvironmentSettings, ServiceSpec

    def gate(spec_asks: bool, block_asks: bool) -> bool:
        service = ServiceSpec(environments={"prod": EnvironmentSettings(requires_approval=spec_asks)})
        request = ReleaseRequest(
            app="shop",
            env="prod",
            image="r/apps/shop",
            digest="sha256:" + "0" * 64,
            sha="a" * 40,
            service=service,
        )
        return request.requires_approval(block_asks)

    assert [gate(s, b) for s, b in ((False, False), (True, False), (False, True), (True, True))] == [
        False,
        True,
        True,
        True,
    ]
