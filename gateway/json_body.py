"""Reading a JSON request body that can be stored, logged and forwarded safely.

``json.loads`` accepts what later breaks: ``"\\ud800"`` (a lone surrogate) becomes a str
that cannot be encoded as UTF-8, so it fails the first time it is written (a 500 when a
conversation holding it is listed), and nesting a few thousand deep raises
``RecursionError``. Both are the client's mistake: a 400 naming the field, before anything
is stored.

The checks cost almost nothing on ordinary bodies: a lone surrogate can only come from a
``\\uD8xx``-``\\uDFxx`` escape (raw UTF-8 cannot encode one, and invalid UTF-8 already fails
to decode), so the parsed value is walked for it only when the raw bytes hold such an
escape; the depth walk visits containers, never strings.
"""

from __future__ import annotations

import re
from typing import Any

from gateway import wire
from gateway.errors import BadRequestError

MAX_DEPTH = 64  # OpenAI's own bodies nest about 8 deep (tool schemas a little more)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def parse_json_body(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The parsed body; ``BadRequestError`` for invalid JSON, lone surrogates and nesting
    deeper than ``max_depth``."""
    try:
        data = wire.loads(raw)
    except RecursionError as exc:
        raise BadRequestError(f"request body nests deeper than {max_depth} levels",
                              code="invalid_json") from exc
    except ValueError as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}",
                              code="invalid_json") from exc
    check_json_value(data, raw, max_depth=max_depth)
    return data


def check_json_value(data: Any, raw: bytes, *, max_depth: int = MAX_DEPTH) -> None:
    path = _too_deep(data, max_depth)
    if path is not None:
        field = path.split(".")[0] if isinstance(data, dict) else None  # the top-level field
        where = f" (in {field})" if field else ""
        raise BadRequestError(f"request body nests deeper than {max_depth} levels{where}",
                              code="invalid_json", param=field)
    if _SURROGATE_ESCAPE.search(raw):
        path = _lone_surrogate(data)
        if path is not None:
            raise BadRequestError(f"{path or 'body'}: a lone UTF-16 surrogate is not text",
                                  code="invalid_value", param=path or None)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _too_deep(data: Any, limit: int) -> str | None:
    """The path of the first container deeper than ``limit``, or None (iterative: no
    recursion limit of our own to hit)."""
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict):
            items: Any = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            continue
        if depth > limit:
            return path
        for key, child in items:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1, _join(path, key)))
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _lone_surrogate(data: Any) -> str | None:
    """The path of the first string (key or value) holding a lone surrogate."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if _has_surrogate(value):
                return path
        elif isinstance(value, dict):
            for key, child in value.items():
                if _has_surrogate(key):
                    return _join(path, "[key]")
                stack.append((child, _join(path, key)))
        elif isinstance(value, list):
            stack.extend((child, _join(path, i)) for i, child in enumerate(value))
    return None
