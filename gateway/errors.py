"""The gateway's error tree; every error leaves as OpenAI error JSON.

    GatewayError (500, api_error)
    ├── BadRequestError (400, invalid_request_error)
    │   └── ContextLengthExceededError  (the prompt cannot fit the model's window)
    ├── AuthenticationError (401)
    ├── PermissionDeniedError (403)
    ├── NotFoundError (404)
    │   ├── ModelNotFoundError
    │   └── FeatureDisabledError        (conversations / knowledge bases not enabled)
    ├── ConflictError (409)             ── ConversationBusyError
    ├── PayloadTooLargeError (413)
    ├── RateLimitError (429)
    ├── UpstreamError (status passed through from a backend)
    ├── BadGatewayError (502)
    ├── ServiceUnavailableError (503)
    │   ├── NoHealthyBackendError
    │   └── StoreUnavailableError
    └── UpstreamTimeoutError (504)

ConfigError is separate: it stops start-up and never reaches a client. The transport's
own exceptions (``gateway.backends.transport.TransportError``) never leave the backends
package untranslated. ``from_validation_errors`` is the one mapping from pydantic's errors
to a 400, used by the hot path and by FastAPI's handler alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any


class ConfigError(Exception):
    """The configuration is invalid; the message says what to fix."""


class GatewayError(Exception):
    status_code = 500
    type = "api_error"
    code: str | None = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}  # sent with the error (Retry-After on a 429)
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code

    def to_body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    def to_sse(self) -> bytes:
        """The one SSE event that ends a stream which failed after it began."""
        return b"data: " + json.dumps(self.to_body()).encode() + b"\n\n"


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class BadRequestError(GatewayError):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ContextLengthExceededError(BadRequestError):
    code = "context_length_exceeded"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="messages")


def from_validation_errors(errors: Sequence[Any], *, skip: tuple[str, ...] = ("body",)
                           ) -> BadRequestError:
    """The first of pydantic's errors as a 400 whose ``param`` names the field."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    loc = [str(p) for p in first.get("loc", ()) if p not in skip]
    param = ".".join(loc) or None
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
    code = "missing_required_parameter" if first.get("type") == "missing" else "invalid_value"
    return BadRequestError(message, param=param, code=code)


class AuthenticationError(GatewayError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status_code = 403
    type = "permission_error"
    code = "insufficient_role"


class NotFoundError(GatewayError):
    status_code = 404
    type = "not_found_error"
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model '{model}' does not exist", param="model")


class FeatureDisabledError(NotFoundError):
    """A route or request option needs a part of the gateway that is not enabled: the same
    404 on every route, so a client cannot tell "disabled" from "absent" by the status."""

    def __init__(self, feature: str, code: str, hint: str = "", *,
                 param: str | None = None) -> None:
        super().__init__(f"{feature} are not enabled on this gateway{hint}", param=param,
                         code=code)


class ConflictError(GatewayError):
    status_code = 409
    type = "conflict_error"
    code = "conflict"


class ConversationBusyError(ConflictError):
    code = "conversation_busy"

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"conversation {conversation_id} is busy with another request")


class PayloadTooLargeError(GatewayError):
    status_code = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class RateLimitError(GatewayError):
    status_code = 429
    type = "rate_limit_error"
    code = "rate_limited"


class UpstreamError(GatewayError):
    """A backend answered with an error; its status and message pass through."""

    type = "upstream_error"
    code = "upstream_error"

    def __init__(self, message: str, status_code: int, *, type_: str | None = None,
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, param=param, code=code, status_code=status_code)
        if type_:
            self.type = type_


class BadGatewayError(GatewayError):
    status_code = 502
    type = "upstream_error"
    code = "bad_gateway"


class ServiceUnavailableError(GatewayError):
    status_code = 503
    type = "service_unavailable"
    code = "service_unavailable"


class NoHealthyBackendError(ServiceUnavailableError):
    code = "no_healthy_backend"


class StoreUnavailableError(ServiceUnavailableError):
    code = "conversation_store_unavailable"


class UpstreamTimeoutError(GatewayError):
    status_code = 504
    type = "timeout_error"
    code = "upstream_timeout"


_TRACE_LINE = re.compile(r"^\s*(Traceback \(|File \"|During handling|The above exception)")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][\w.@+-]+){2,}\.(?:py|pyx|so|cpp|cc|h)\b(?::\d+)?")


def public_message(message: str, limit: int = 500) -> str:
    """A backend's error message as a client may see it: no traceback lines, no file
    paths (the whole body stays in the gateway's log, with the request id)."""
    lines = [line for line in message.splitlines() if not _TRACE_LINE.match(line)]
    text = _PATH.sub("<path>", " ".join(" ".join(lines).split()))
    return text[:limit] or "backend error"


def upstream_error_from_response(status_code: int, body: bytes) -> UpstreamError:
    """Translate a backend's error reply, whatever its shape, into OpenAI's (its message
    cleaned by ``public_message``)."""
    message, type_, param, code = f"backend returned HTTP {status_code}", None, None, None
    try:
        parsed = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        if text:
            message = f"{message}: {text[:500]}"
    else:
        err = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        if isinstance(err, dict):
            message = str(err.get("message") or err.get("detail") or message)
            type_ = err.get("type") if isinstance(err.get("type"), str) else None
            param = err.get("param") if isinstance(err.get("param"), str) else None
            code = str(err["code"]) if err.get("code") is not None else None
        elif isinstance(err, str):
            message = err
    if type_ is None:
        type_ = "invalid_request_error" if 400 <= status_code < 500 else "upstream_error"
    return UpstreamError(public_message(message), status_code, type_=type_, param=param,
                         code=code)
