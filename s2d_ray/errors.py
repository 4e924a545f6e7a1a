"""User-facing errors: one line, naming the field, row or file at fault."""


import difflib
import re
import typing
from typing import Any


class S2DError(Exception):
    """A problem with the user's config, input or environment (exit code 2)."""

    exit_code = 2


# Parts of a pydantic error location that name a union branch ('list[str]', 'function-after[...]',
# 'str'), not a key the user wrote: they never reach the user.
_BRANCH = re.compile(r"[\[\](),-]|^(str|int|float|bool|list|dict|none|literal|json-or-python)$")
YAML_BOOLEANS = "YAML reads unquoted yes/no/on/off/true/false as booleans"


def _is_branch(part: Any) -> bool:
    return isinstance(part, str) and bool(_BRANCH.search(part))


def _model_in(annotation: Any) -> Any:
    """The pydantic model a field's annotation holds (itself, or a union member), if any."""
    from pydantic import BaseModel

    for t in (annotation, *typing.get_args(annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def _keys_at(model: Any, parts: list[Any]) -> list[str]:
    """The keys valid at ``parts`` (a path of keys below ``model``), for a misspelt-key suggestion."""
    node = model
    for part in parts:
        if node is None or part not in node.model_fields:
            return []
        node = _model_in(node.model_fields[part].annotation)
    return list(node.model_fields) if node is not None else []


def _shown(value: Any) -> str:
    return "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, list) else repr(value)


def _message(e: dict[str, Any], model: Any, parts: list[Any]) -> str:
    """One error's message: what was expected, the value found, and the fix where there is one."""
    kind, value = e["type"], e.get("input")
    if kind == "extra_forbidden":
        near = difflib.get_close_matches(str(parts[-1]), _keys_at(model, parts[:-1]), n=1) if model and parts else []
        return "unknown key" + (f"; did you mean {near[0]!r}?" if near else "")
    if kind == "string_type" and isinstance(value, bool):
        return f"expected a string, got the boolean {str(value).lower()} ({YAML_BOOLEANS}); quote the value, e.g. \"yes\" for yes"
    if kind == "string_type" and isinstance(value, (int, float)):
        return f"expected a string, got the number {value!r}; quote it: \"{value}\""
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys (key: value lines), got {_shown(value)}"
    if kind == "list_type":
        return f"expected a list ([a, b], or '- a' lines), got {_shown(value)}"
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", e.get("ctx", {}).get("expected", ""))
        near = difflib.get_close_matches(str(value), options, n=1)
        return f"{e['msg']}, got {value!r}" + (f"; did you mean {near[0]!r}?" if near else "")
    msg = e["msg"].removeprefix("Value error, ")
    scalar = value is None or isinstance(value, (str, int, float, bool))
    return f"{msg} (got {value!r})" if scalar and kind not in ("value_error", "assertion_error", "missing") else msg


def first_error(err: Any, model: Any = None) -> str:
    """A pydantic ValidationError's first problem as one line, ``field.path: message``: the keys
    the user wrote (never pydantic's union branch names), the value found and the fix. Of a
    union's branches, the one that got furthest is the one the user meant. ``model`` (the
    validated class) lets a misspelt key name its nearest valid one."""
    errors = err.errors()
    key = [p for p in errors[0]["loc"] if not _is_branch(p)]
    same = [e for e in errors if [p for p in e["loc"] if not _is_branch(p)][: len(key)] == key]
    best = max(same, key=lambda e: len(e["loc"]))
    parts = [p for p in best["loc"] if not _is_branch(p)]
    loc = ".".join(str(p) for p in parts)
    msg = _message(best, model, parts)
    if loc and best["type"] == "value_error" and (nested := re.match(r"([\w.]+): ", msg)):
        loc, msg = f"{loc}.{nested.group(1)}", msg[nested.end():]  # a nested model's own path (e.g. task.labels)
    return f"{loc}: {msg}" if loc else msg


class EngineDead(RuntimeError):
    """The inference engine itself has failed (not one request): every request on it fails, so
    the batch must be retried on a new engine."""
