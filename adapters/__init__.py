"""Adapters: each reads one number from one kind of source. The public API is `adapters.api`."""
