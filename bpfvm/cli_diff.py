"""Subcommands of differential testing and fuzzing: diff, fuzz."""

from __future__ import annotations
