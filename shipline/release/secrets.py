"""The values of an app's secret variables, read from Prefect Secret blocks when a release deploys.

A spec names a block (``DB_PASSWORD: {secret: payments-db}``); the operator keeps the value in it. The
release flow reads the values in its own process, only to hand them to ``docker compose up`` in its
environment (``shipline.release.compose``): never as a task's parameter or result (results are persisted),
never in a log line or an error message, never in a file. Prefect redacts only its own API key from
logs, not Secret values, so nothing here relies on redaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import cast

from prefect.blocks.system import Secret

from shipline.errors import DeployError


def block_value(name: str) -> object:
    """The value kept in the Prefect Secret block ``name``, as stored (text, or a JSON object or list).

    Raises:
        ValueError: if there is no such block (Prefect's own error).
    """
    return cast(Secret, Secret.load(name)).value.get_secret_value()


def read_secrets(
    secrets: Mapping[str, str], *, where: str, store: Callable[[str], object] = block_value
) -> dict[str, str]:
    """The value of each variable of ``secrets`` (variable → Secret block name), read from its block.

    Args:
        secrets: Variable → the name of the Secret block that holds its value.
        where: The app and environment, for messages (``payments/prod``).
        store: Reads a block's value by name, raising ValueError for a missing one (``block_value``).

    Returns:
        Variable → value.

    Raises:
        DeployError: naming the variable and the block, when the block is missing or holds no text.
    """
    values: dict[str, str] = {}
    for variable, block in secrets.items():
        try:
            value = store(block)
        except ValueError:
            # Not chained: a block that does not validate is a pydantic error quoting its input, the value.
            raise DeployError(
                f"{where}: {variable} takes its value from the Prefect Secret block {block!r}, "
                "and there is no such block",
                hint=f"an operator creates it: `prefect block create secret` (or Blocks → Secret in the "
                f"Prefect UI) named {block}, or in Python: Secret(value=...).save({block!r})",
            ) from None
        if not isinstance(value, str) or "\x00" in value:
            raise DeployError(
                f"{where}: the Secret block {block!r} of {variable} does not hold text "
                "(a JSON object or list, or a NUL byte): a variable's value is a string",
                hint=f"save {block} again with the value as a string",
            )
        values[variable] = value
    return values
