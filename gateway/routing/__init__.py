"""Routing: pure, synchronous policies that pick one endpoint from a snapshot."""

from gateway.routing.cache_aware import CacheAware
from gateway.routing.policies import (
    LeastOutstanding,
    Policy,
    PolicyOptions,
    RoundRobin,
    RoutingPolicy,
)
from gateway.routing.prefix_index import PrefixIndex
from gateway.routing.registry import POLICIES, make_policy
from gateway.routing.session import Session
from gateway.routing.sglang_like import SglangLike
from gateway.routing.views import EndpointView, RoutingRequest

__all__ = [
    "CacheAware",
    "EndpointView",
    "PrefixIndex",
    "Session",
    "SglangLike",
    "LeastOutstanding",
    "POLICIES",
    "Policy",
    "PolicyOptions",
    "RoundRobin",
    "RoutingPolicy",
    "RoutingRequest",
    "make_policy",
]
