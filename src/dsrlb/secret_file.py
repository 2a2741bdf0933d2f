"""Shared secrets named by the `set ...secretfile "/path"` keys (`agentsecretfile`, `syncsecretfile`).

The secret is the file's first line, stripped. Reading fails closed: a configured but unreadable or
empty file is an error, never a silent fall back to unauthenticated traffic.
"""

from __future__ import annotations

from dsrlb.model import Config


class SecretFileError(ValueError):
    """The file a secret key names cannot be used; the message names the key and the path."""


def secret_from_setting(config: Config, key: str) -> bytes | None:
    """The secret of `set KEY "/path"`, or None when `key` is not set."""
    path = config.setting(key)
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            secret = f.readline().strip()
    except OSError as exc:
        raise SecretFileError(f"{key} {path}: {exc.strerror or exc}") from None
    if not secret:
        raise SecretFileError(f"{key} {path}: the file is empty")
    return secret
