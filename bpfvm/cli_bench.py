"""Subcommands of the benchmark harness: bench (and its dashboard)."""

from __future__ import annotations
