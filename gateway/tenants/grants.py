"""What a principal may use: models and knowledge bases.

Something not granted answers exactly as something that does not exist (the same 404,
message and code), so names cannot be probed with a chat key.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from gateway.auth import Principal
from gateway.backends import BackendPool, ModelRoute
from gateway.errors import ModelNotFoundError, NotFoundError
from gateway.settings import ModelConfig, Role


def model_route(pool: BackendPool, principal: Principal, model: str) -> ModelRoute:
    if not principal.may_use_model(model):
        raise ModelNotFoundError(model)
    return pool.route(model)


def knowledge_base_not_found(name: str) -> NotFoundError:
    # rag's own wording for a base that does not exist
    return NotFoundError(f"knowledge base {name!r} not found", code="knowledge_base_not_found")


def check_knowledge_base(principal: Principal, name: str,
                         model_defaults: Collection[str | None] = ()) -> None:
    """A chat key uses the bases granted to it or its team, plus the one its model's
    config names (in search, with no model: those of the models it may use); admins use
    all."""
    if name in model_defaults or principal.may_use_knowledge_base(name):
        return
    raise knowledge_base_not_found(name)


def models_knowledge_bases(models: Iterable[ModelConfig], principal: Principal) -> set[str]:
    return {m.knowledge.knowledge_base for m in models
            if m.knowledge.knowledge_base and principal.may_use_model(m.name)}


def check_manages(principal: Principal, name: str) -> None:
    """Managing (upload, delete documents, list them) needs kb_admin and the grant."""
    if principal.role not in (Role.ADMIN, Role.KB_ADMIN):
        raise knowledge_base_not_found(name)
    check_knowledge_base(principal, name)
