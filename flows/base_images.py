"""Flow: rebuild the OS and middleware layers, and move app images onto them without recompiling."""

from __future__ import annotations

from prefect import flow

from shipline.build.registry import PushedImage
from shipline.build.security_updates import UpdatesReport
from shipline.spec import ImageSpec
from tasks.base_images import BaseLayers, prepare_base_layers, rebase_app, report_security_updates


@flow(name="base-images")
def base_images(
    image: ImageSpec, app_images: list[str] | None = None
) -> dict[str, PushedImage | BaseLayers | UpdatesReport]:
    """Rebuild the OS layer (e.g. `debian` `bookworm-2026.11` for today's updates) and its middleware.

    Their new digests are recorded in etcd: every later build uses these digests, whatever the tags say
    (run this too when a build reports that a recorded digest is gone from the registry).

    A Debian OS layer is built from signed packages with the security suite's updates applied. Each app
    image given by digest is then rebuilt on the new middleware from its own artifact layer — no checkout,
    no compile — and pushed as `{sha}-{middleware version}`, ready for `release-to-pre`. Last, the
    `security-updates-…` artifact lists the packages of the new middleware with pending security updates
    (none, right after a rebuild, unless the security suite published some meanwhile).
    """
    layers = prepare_base_layers(image, rebuild=True)
    rebased: dict[str, PushedImage | BaseLayers | UpdatesReport] = {"layers": layers}
    for app_image in app_images or []:
        rebased[app_image] = rebase_app(app_image, layers.middleware)
    if image.os.name == "debian":
        rebased["security-updates"] = report_security_updates(layers.middleware)
    return rebased
