"""Thin Lambda handlers: parse the event, call the domain, shape the answer."""
