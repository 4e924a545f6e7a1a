"""User-facing errors: one line, naming the field, row or file at fault."""


class S2DError(Exception):
    """A problem with the user's config, input or environment (exit code 2)."""

    exit_code = 2
