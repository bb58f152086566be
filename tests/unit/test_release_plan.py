from pathlib import Path

from shipline.release_plan import request_from_spec
from shipline.spec import load_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello-python"


def test_request_takes_the_environment_s_settings() -> None:
    spec = load_spec(EXAMPLE)
    prod = request_from_spec(
        spec,
        env="prod",
        image="r/apps/hello-python",
        digest="sha256:" + "c" * 64,
        sha="d" * 40,
        committed=None,
    )
    assert prod.service.replicas == 2
    assert prod.service.environment == {"GREETING": "hello from PROD"}
    assert [check.path for check in prod.auto_tests.http] == ["/healthz", "/version"]
    other = request_from_spec(
        spec, env="qa", image="r", digest="sha256:" + "c" * 64, sha="d" * 40, committed=None
    )
    assert other.service.replicas is None and other.service.environment == {}
