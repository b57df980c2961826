"""Handlers the local Lambda runtime tests run in real worker processes."""
