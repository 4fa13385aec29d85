"""Subcommands of the verifier and rewrites: verify, xlated."""

from __future__ import annotations
