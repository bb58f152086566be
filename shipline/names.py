"""Validation of the names that reach etcd keys, Dockerfiles, compose files and nginx configs.

A value is validated before it is rendered anywhere, so that no app or environment name can inject
configuration (``;``, newlines, spaces, braces) into a file Shipline writes.
"""

from __future__ import annotations

import re

from shipline.errors import ConfigError

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
"""App and environment names: lower-case letters, digits and dashes, at most 63 characters."""


def validate_name(value: object, *, what: str) -> str:
    """Return ``value`` if it is a valid Shipline name.

    Args:
        value: The candidate name.
        what: What the name is ("app name", "environment"), used in the error message.

    Returns:
        The name, unchanged.

    Raises:
        ConfigError: if the name does not match ``[a-z0-9][a-z0-9-]*`` (at most 63 characters).
    """
    if not isinstance(value, str) or NAME_PATTERN.fullmatch(value) is None:
        raise ConfigError(
            f"invalid {what} {value!r}: expected lower-case letters, digits and dashes, "
            "starting with a letter or digit, at most 63 characters",
            hint=f"rename the {what}, for example 'my-service'",
        )
    return value


def validate_port(value: object, *, what: str = "port") -> int:
    """Return ``value`` if it is a TCP port number.

    Raises:
        ConfigError: if the value is not an integer between 1 and 65535.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"invalid {what} {value!r}: expected an integer from 1 to 65535")
    return value
