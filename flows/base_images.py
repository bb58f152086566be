"""Flow: rebuild the OS and middleware layers, and move app images onto them without recompiling."""

from __future__ import annotations

from prefect import flow

from shipline.build.registry import PushedImage
from shipline.spec import ImageSpec
from tasks.base_images import BaseLayers, prepare_base_layers, rebase_app


@flow(name="base-images")
def base_images(image: ImageSpec, app_images: list[str] | None = None) -> dict[str, PushedImage | BaseLayers]:
    """Rebuild the OS layer (e.g. `debian` `bookworm-2026.11` for today's updates) and its middleware.

    Then each app image given by digest is rebuilt on the new middleware from its own artifact layer — no
    checkout, no compile — and pushed as `{sha}-{middleware version}`, ready for `release-to-pre`.
    """
    layers = prepare_base_layers(image, rebuild=True)
    rebased: dict[str, PushedImage | BaseLayers] = {"layers": layers}
    for app_image in app_images or []:
        rebased[app_image] = rebase_app(app_image, layers.middleware)
    return rebased
