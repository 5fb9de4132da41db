"""What the store commands (``ragate conversations``, ``ragate keys``) share: the config
option, and running one action on a store opened from the config, with the gateway's
errors shown as a click error instead of a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import click

from gateway.errors import ConfigError, GatewayError
from gateway.settings import Settings, load_settings

T = TypeVar("T")
S = TypeVar("S", bound="Closable")


class Closable(Protocol):
    async def close(self) -> None: ...


config_option = click.option("--config", "-c", type=click.Path(dir_okay=False),
                             envvar="RAGATE_CONFIG", help="YAML config (env: RAGATE_CONFIG)")


def settings_of(config: str | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def run_on_store(config: str | None, open_store: Callable[[Settings], Awaitable[S]],
                 action: Callable[[S, Settings], Awaitable[T]]) -> T:
    settings = settings_of(config)

    async def main() -> T:
        store = await open_store(settings)
        try:
            return await action(store, settings)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except GatewayError as exc:
        raise click.ClickException(exc.message) from exc


__all__ = ["config_option", "run_on_store", "settings_of"]
