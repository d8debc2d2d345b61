"""Bench server on the FastMCP framework."""
