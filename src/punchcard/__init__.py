"""Punchcard: loyalty and gift cards for restaurant and retail chains."""

from __future__ import annotations

__version__ = "0.1.0"
