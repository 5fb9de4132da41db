"""Routing: pure, synchronous policies that pick one endpoint from a snapshot."""

from gateway.routing.policies import (
    EndpointView,
    LeastOutstanding,
    Policy,
    RoundRobin,
    RoutingPolicy,
    RoutingRequest,
    make_policy,
)

__all__ = [
    "EndpointView",
    "LeastOutstanding",
    "Policy",
    "RoundRobin",
    "RoutingPolicy",
    "RoutingRequest",
    "make_policy",
]
