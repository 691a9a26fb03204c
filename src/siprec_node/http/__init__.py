"""HTTP endpoints of a node: health, readiness, metrics and the admin API."""

from siprec_node.http.server import HttpApi

__all__ = ["HttpApi"]
