"""Arbiter service: latest state per pack, freshness, and ONE bank with its limits."""
