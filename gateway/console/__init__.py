"""The web console at ``/ui``: static files inside the package, no build step.

The pages talk to the same API as every client, with the key the user signs in with;
they hide what a key may not do, and the server refuses it anyway. Nothing is fetched
from elsewhere at run time, and the content security policy says so to the browser.
"""

from __future__ import annotations

from pathlib import Path

from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"

# everything from this origin; no inline script; fetch() only to this origin; not framed
HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; "
     b"style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
     b"base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),  # revalidate: a new version shows on the next load
]


class ConsoleFiles(StaticFiles):
    """Starlette's static files (ETags, ranges, index.html) with the headers above."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def console_app() -> ConsoleFiles:
    return ConsoleFiles(directory=STATIC, html=True)
