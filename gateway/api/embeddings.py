"""``POST /v1/embeddings``: the knowledge bases' embedding model as OpenAI's endpoint.

LangChain's ``OpenAIEmbeddings`` and LlamaIndex's ``OpenAIEmbedding`` point at it with a
base URL; the model is the one knowledge bases index with, so a client's own vectors
match the gateway's search. The OpenAI SDKs ask for ``base64`` by default (float32,
little-endian), which is also the compact form.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from gateway.api.deps import ChatPrincipal, ServicesDep, context_of
from gateway.api.openai import read_json
from gateway.errors import BadRequestError, NotFoundError
from gateway.knowledge.service import knowledge_service
from gateway.schemas import EmbeddingRequest

router = APIRouter(prefix="/v1", tags=["openai"])
MAX_INPUTS = 2048  # OpenAI's own bound on one request's inputs


def _texts(value: str | list[Any]) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not texts or not all(isinstance(t, str) for t in texts):
        raise BadRequestError("input: send text (a string or a list of strings); token "
                              "arrays belong to another tokenizer", param="input",
                              code="invalid_value")
    if len(texts) > MAX_INPUTS:
        raise BadRequestError(f"input: at most {MAX_INPUTS} texts per request", param="input",
                              code="invalid_value")
    if any(not t for t in texts):
        raise BadRequestError("input: texts must not be empty", param="input",
                              code="invalid_value")
    return texts


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()


@router.post("/embeddings")
async def embeddings(request: Request, services: ServicesDep, principal: ChatPrincipal
                     ) -> dict[str, Any]:
    body = (await read_json(request, EmbeddingRequest))[1]
    knowledge = knowledge_service(services.knowledge, param="model")
    embedder = knowledge.embedder
    if body.model != embedder.name:
        raise NotFoundError(f"The model '{body.model}' does not exist; embeddings are "
                            f"served by '{embedder.name}'", param="model",
                            code="model_not_found")
    if body.dimensions is not None and body.dimensions != embedder.dimension:
        raise BadRequestError(f"dimensions: {embedder.name} gives {embedder.dimension}",
                              param="dimensions", code="unsupported_value")
    ctx = context_of(request)
    ctx.model = embedder.name
    texts = _texts(body.input)
    if services.tenancy is not None and principal.limited:  # generates nothing: cap 0
        await services.tenancy.admit(ctx, principal, sum(len(t) for t in texts) // 4, 0)
    vectors, counts = await knowledge.embed(texts)
    ctx.prompt_tokens, ctx.completion_tokens = sum(counts), 0
    data = [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
            for i, v in enumerate(vectors)]
    tokens = sum(counts)
    return {"object": "list", "data": data, "model": embedder.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
