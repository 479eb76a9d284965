"""Workflow primitives: thin calls on the current workflow context."""
