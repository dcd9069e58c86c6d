"""Shared pytest configuration for the dtmfguard test suite (nothing is shared yet)."""
