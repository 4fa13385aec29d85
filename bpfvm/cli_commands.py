"""Subcommands beyond the core ones in `cli.py`; each stage adds its command here."""

from __future__ import annotations
