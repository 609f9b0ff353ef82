"""Oracles, strategies and fixtures shared by the tests (brute force, random circuits and queries)."""
