"""User-facing errors: one line, naming the field, row or file at fault."""


from typing import Any


class S2DError(Exception):
    """A problem with the user's config, input or environment (exit code 2)."""

    exit_code = 2


def first_error(err: Any) -> str:
    """A pydantic ValidationError's first error as one line, ``field.path: message``."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


class EngineDead(RuntimeError):
    """The inference engine itself has failed (not one request): every request on it fails, so
    the batch must be retried on a new engine."""
