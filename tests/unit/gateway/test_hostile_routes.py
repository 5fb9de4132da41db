"""Every route, hostile input: nothing answers 500. Paths with traversal, odd bytes and
huge names, bodies that are not objects, lone surrogates, wrong types."""

from __future__ import annotations

import re

import httpx

from tests.unit.gateway.conftest import FakeFleet, chat_reply, one_model

KEYS = {"auth": {"keys": [{"key": "sk-admin", "role": "admin", "owner": "ops"}]}}
NAMES = ["..%2F..%2Fetc%2Fpasswd", "%00", "a" * 3000, "%F0%9F%98%80", "key_nope", "-"]
BODIES = [b"", b"null", b"[]", b'"x"', b"{}", b'{"name": 5, "owner": ["x"], "model": {}}',
          b'{"name": "\\ud800", "owner": "\\udfff"}', b"{" * 100 + b"}" * 100]


async def test_no_route_answers_500_to_hostile_input(fleet: FakeFleet, make_client) -> None:
    url = fleet.add("b1:8000", lambda req: httpx.Response(200, json=chat_reply()))
    headers = {"Authorization": "Bearer sk-admin", "content-type": "application/json"}
    async with make_client({**one_model(url), **KEYS}) as (client, app):
        paths = app.openapi()["paths"]  # every route the app serves, with its methods
        assert len(paths) > 25
        seen = 0
        for template, operations in paths.items():
            for method in (m.upper() for m in operations):
                for name in NAMES:
                    path = re.sub(r"\{[^}]+\}", name, template)
                    for body in BODIES if method in ("POST", "PUT", "PATCH") else [b""]:
                        r = await client.request(method, path, content=body, headers=headers)
                        seen += 1
                        assert r.status_code < 500, (method, path, body[:40], r.text[:300])
                        if r.status_code >= 400:
                            assert set(r.json()) == {"error"}, (method, path, r.text[:200])
        assert seen > 500
