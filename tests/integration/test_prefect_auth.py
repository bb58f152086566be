"""The stack's Prefect answers only Shipline: without the credential, from another origin or without a CSRF
token nothing is read or changed — not even from a job container on the host network — while Shipline's
own clients, the UI's login and the CLI keep working."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import docker
import httpx
import pytest

from shipline.config import Settings
from shipline.docker import NOBODY, docker_client, run_job
from shipline.prefect_auth import PrefectAuth, prefect_auth
from shipline.stack.credentials import api_auth_string, database_encryption_key
from tests.cli import shipline
from tests.images import busybox_web_image

SECRETS = {"include_secrets": True, "limit": 5}


@pytest.fixture
def http() -> httpx.Client:
    return httpx.Client(timeout=10, trust_env=False)


def test_without_the_credential_no_secret_and_no_deployment_is_reachable(
    settings: Settings, http: httpx.Client
) -> None:
    api = settings.prefect_api_url
    # A change needs a CSRF token, and a token needs the credential: both doors are shut.
    for path, body in (("/block_documents/filter", SECRETS), ("/deployments/filter", {"limit": 5})):
        refused = http.post(f"{api}{path}", json=body)
        assert refused.status_code == 403 and "Missing CSRF token" in refused.text, refused.text
        forged = http.post(
            f"{api}{path}", json=body, headers={"Prefect-Csrf-Token": "x", "Prefect-Csrf-Client": "y"}
        )
        assert forged.status_code == 403, forged.text
    assert http.get(f"{api}/csrf-token", params={"client": "attacker"}).status_code == 401
    assert http.get(f"{api}/block_types/slug/secret/block_documents/name/x").status_code == 401
    assert http.get(f"{api}/admin/version").status_code == 401
    assert http.get(f"{api}/health").text.strip() == "true", "health stays open for probes"


def test_block_secrets_are_encrypted_with_a_key_the_database_does_not_hold(settings: Settings) -> None:
    from prefect.blocks.system import Secret

    Secret(value="pauth-check").save("prefect-auth-test", overwrite=True)  # encrypts with the server's key
    loaded = cast(Secret[str], Secret.load("prefect-auth-test"))  # called from sync code: not a coroutine
    assert loaded.get() == "pauth-check"
    assert database_encryption_key(settings) is None


def test_a_wrong_credential_gets_no_token(settings: Settings, http: httpx.Client) -> None:
    wrong = PrefectAuth(settings.prefect_api_url, "shipline:guessed")
    response = http.post(f"{settings.prefect_api_url}/block_documents/filter", json=SECRETS, auth=wrong)
    assert response.status_code == 403  # its token request was refused (401), so it had none to send
    token = http.get(f"{settings.prefect_api_url}/csrf-token", params={"client": "c"}, auth=wrong)
    assert token.status_code == 401


def test_the_credential_without_a_csrf_token_changes_nothing(settings: Settings, http: httpx.Client) -> None:
    basic = httpx.BasicAuth(*api_auth_string(settings).split(":", 1))
    response = http.post(f"{settings.prefect_api_url}/deployments/filter", json={}, auth=basic)
    assert response.status_code == 403, response.text


def test_the_credential_with_its_csrf_token_works(settings: Settings, http: httpx.Client) -> None:
    auth = prefect_auth(settings)
    deployments = http.post(f"{settings.prefect_api_url}/deployments/filter", json={"limit": 200}, auth=auth)
    assert deployments.status_code == 200, deployments.text
    assert "release-to-prod" in {d["name"] for d in deployments.json()}
    blocks = http.post(f"{settings.prefect_api_url}/block_documents/filter", json=SECRETS, auth=auth)
    assert blocks.status_code == 200, blocks.text


def test_only_prefects_own_origin_may_make_cross_origin_requests(
    settings: Settings, http: httpx.Client
) -> None:
    url = f"{settings.prefect_api_url}/deployments/filter"

    def preflight(origin: str) -> httpx.Response:
        headers = {
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        return http.options(url, headers=headers)

    evil = preflight("http://evil.localhost:8000")
    assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers
    own = preflight(settings.prefect_url)
    assert own.status_code == 200 and own.headers["access-control-allow-origin"] == settings.prefect_url


def test_the_ui_is_served_and_asks_for_the_credential(settings: Settings, http: httpx.Client) -> None:
    ui = http.get(settings.prefect_url, follow_redirects=True, headers={"Accept": "text/html"})
    assert ui.status_code == 200 and "<html" in ui.text.lower()
    ui_settings = http.get(f"{settings.prefect_url}/ui-settings").json()
    assert ui_settings["auth"] == "BASIC" and ui_settings["csrf_enabled"] is True
    # The login form stores the string and sends it as the Basic credential, as PrefectAuth does.
    check = http.get(f"{settings.prefect_api_url}/admin/version", auth=prefect_auth(settings))
    assert check.status_code == 200


def test_shipline_cli_talks_to_prefect_with_the_credential(settings: Settings) -> None:
    # The CLI reads the credential file itself: Prefect answers it (no such run), not 401.
    answered = shipline("approve", "00000000-0000-0000-0000-000000000000")
    assert answered.returncode == 1 and "error: no flow run 00000000-" in answered.stderr, answered.stderr


@pytest.fixture(scope="module")
def curl_image(settings: Settings) -> str:
    client = docker_client(settings.docker_url)
    repository = f"{settings.registry_address}/apps/prefect-auth-test"
    return f"{repository}@{busybox_web_image(client, repository, 'v1', {'healthz': 'ok'})}"


def test_a_build_command_on_the_host_network_can_do_nothing_there(
    settings: Settings, curl_image: str, tmp_path: Path
) -> None:
    api = settings.prefect_api_url
    script = (
        "wget -S -q -O- --header 'Content-Type: application/json' "
        f"--post-data '{{\"include_secrets\": true}}' {api}/block_documents/filter; "
        f"wget -S -q -O- {api}/csrf-token?client=build; "
        f"wget -S -q -O- {api}/block_types/slug/secret/block_documents/name/x; "
        f"wget -S -q -O- {api}/health"
    )
    client: docker.DockerClient = docker_client(settings.docker_url)
    lines: list[str] = []
    done = run_job(
        client,
        image=curl_image,
        argv=["sh", "-c", script],
        log=lines.append,
        timeout=60,
        network_mode="host",  # the widest a job gets: an operator may allow the host network
        user=NOBODY,  # the job user where a block says nothing else
    )
    output = "\n".join(lines)
    assert done.code == 0, output  # the last request, the open health check, succeeded
    statuses = [line.split()[1] for line in lines if line.strip().startswith("HTTP/1.1")]
    assert statuses == ["403", "401", "401", "200"], output
