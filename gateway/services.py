"""The shared objects one app owns, built from settings and handed to the routers."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.auth import KeyRing
from gateway.backends import BackendPool
from gateway.metrics import Metrics
from gateway.proxy import Proxy
from gateway.settings import Settings


@dataclass
class Services:
    settings: Settings
    keys: KeyRing
    pool: BackendPool
    metrics: Metrics
    proxy: Proxy
