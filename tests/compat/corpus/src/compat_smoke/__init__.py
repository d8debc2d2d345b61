"""Behavioural smoke checks for the compatibility corpus.

Every check returns a small, deterministic, JSON-serialisable value; `python -m
compat_smoke` in a venv and the packed binary must print the same JSON.
"""
