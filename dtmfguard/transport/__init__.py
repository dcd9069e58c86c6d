"""Thin I/O: sockets that move bytes to and from the sans-I/O cores (ports, media relay)."""

from dtmfguard.transport.ports import PortPool, PortsExhausted

__all__ = ["PortPool", "PortsExhausted"]
