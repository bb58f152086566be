"""Loading a saved block document, with a missing one reported as Shipline's error."""

from __future__ import annotations

from typing import TypeVar, cast

from prefect.blocks.core import Block

from shipline.errors import ConfigError

B = TypeVar("B", bound=Block)


def load_document(block_type: type[B], name: str, *, what: str, hint: str) -> B:
    """The saved document ``name`` of ``block_type``, as an operator last edited it.

    Raises:
        ConfigError: naming ``what`` is missing, and ``hint``.
    """
    try:
        return cast(B, block_type.load(name))
    except ValueError as exc:
        raise ConfigError(
            f"{what}: there is no {block_type.get_block_type_slug()}/{name} block", hint=hint
        ) from exc
