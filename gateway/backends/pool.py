"""The backend pool: backends by name, model routes over them, and run-time changes.

Lifecycle: ``start()`` runs a first probe round and the probe loop; ``close()`` stops the
loop and closes every client. Admin changes (add, drain, remove) live in memory only;
the config file stays the source of truth at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from gateway.backends.backend import Backend, Target
from gateway.backends.health import probe_all
from gateway.errors import ConflictError, ModelNotFoundError, NotFoundError
from gateway.routing import EndpointView, Policy, PolicyOptions, RoutingPolicy, make_policy
from gateway.settings import BackendConfig, ModelConfig, PoolConfig, backend_name

log = logging.getLogger("ragate.pool")


@dataclass
class ModelRoute:
    """A public model name, its routing policy and its group of targets."""

    name: str
    policy_name: Policy
    policy: RoutingPolicy
    owned_by: str
    created: int
    targets: list[Target] = field(default_factory=list)

    def routable(self, exclude: set[str] | frozenset[str] = frozenset()) -> list[Target]:
        return [
            t for t in self.targets
            if t.backend.name not in exclude and t.backend.routable()
        ]

    def has_healthy_backend(self) -> bool:
        return any(t.backend.healthy and not t.backend.draining for t in self.targets)


def views(targets: list[Target]) -> list[EndpointView]:
    return [
        EndpointView(t.backend.name, t.backend.in_flight, t.weight, t.backend.waiting,
                     t.backend.kv_usage)
        for t in targets
    ]


class BackendPool:
    def __init__(
        self,
        config: PoolConfig,
        models: list[ModelConfig],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self._transport = transport
        self.backends: dict[str, Backend] = {}
        self.models: dict[str, ModelRoute] = {}
        self._probe_task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        created = 1_700_000_000 if clock is None else int(clock())
        for model in models:
            options = PolicyOptions(**model.routing.model_dump())
            self.models[model.name] = ModelRoute(
                name=model.name, policy_name=model.policy,
                policy=make_policy(model.policy, options),
                owned_by=model.owned_by, created=created,
            )
            for backend in model.backends:
                self.add_backend(model.name, backend)

    # -- lookup ---------------------------------------------------------------------------

    def route(self, model: str) -> ModelRoute:
        route = self.models.get(model)
        if route is None:
            raise ModelNotFoundError(model)
        return route

    def backend(self, name: str) -> Backend:
        backend = self.backends.get(name)
        if backend is None or backend.removed:
            raise NotFoundError(
                f"no backend named {name!r}", param="name", code="backend_not_found"
            )
        return backend

    # -- run-time changes -----------------------------------------------------------------

    def serves(self, name: str, model: str) -> bool:
        route = self.models.get(model)
        return route is not None and any(t.backend.name == name for t in route.targets)

    def check_add(self, model: str, config: BackendConfig) -> None:
        """Raise the 409 ``add_backend`` would, changing nothing."""
        name = backend_name(config)
        backend = self.backends.get(name)
        if backend is None or backend.removed:
            return
        if backend.url != config.url:
            raise ConflictError(f"backend name {name!r} is already used for {backend.url}")
        if backend.kind != config.kind:
            # one server speaks one dialect: a second kind would be silently ignored
            raise ConflictError(f"backend {name!r} is already declared as kind "
                                f"{backend.kind}, not {config.kind}; give it a name to "
                                "declare the same URL twice")
        if self.serves(name, model):
            raise ConflictError(f"backend {name!r} already serves model {model!r}")

    def add_backend(self, model: str, config: BackendConfig) -> Backend:
        """Add ``config`` to ``model``'s group, creating the model route if it is new."""
        self.check_add(model, config)
        route = self.models.get(model)
        if route is None:
            route = ModelRoute(model, Policy.ROUND_ROBIN, make_policy(Policy.ROUND_ROBIN),
                               "ragate", 1_700_000_000)
            self.models[model] = route
        name = backend_name(config)
        backend = self.backends.get(name)
        if backend is None or backend.removed:
            backend = Backend(name, config, self.config, self._transport)
            self.backends[name] = backend
        route.targets.append(
            Target(backend, config.model or model, config.lora, config.weight)
        )
        return backend

    def drain(self, name: str) -> Backend:
        """No new requests; in-flight ones finish. ``undrain`` reverses it."""
        backend = self.backend(name)
        backend.draining = True
        return backend

    def undrain(self, name: str) -> Backend:
        backend = self.backend(name)
        backend.draining = False
        return backend

    def remove(self, name: str) -> Backend:
        """Unroute at once; the client closes when the last in-flight request ends."""
        backend = self.backend(name)
        backend.removed = True
        for route in self.models.values():
            route.targets = [t for t in route.targets if t.backend is not backend]
            route.policy.forget(name)
        del self.backends[name]
        task = asyncio.get_running_loop().create_task(self._close_when_idle(backend))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return backend

    async def _close_when_idle(self, backend: Backend) -> None:
        await backend.idle.wait()
        await backend.client.aclose()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await probe_all(self.backends.values(), self.config.health_timeout_s)
        self._probe_task = asyncio.get_running_loop().create_task(self._probe_loop())

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            try:
                await probe_all(list(self.backends.values()), self.config.health_timeout_s)
            except Exception:  # a probe bug must not kill the loop
                log.exception("health probe round failed")

    async def close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        for task in list(self._closing):
            task.cancel()
        for backend in self.backends.values():
            await backend.client.aclose()
