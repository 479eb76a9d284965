"""Decorators, the registry and the retry policy. Imports nothing eagerly: submodules load on
first use (``pyworkflow.core.cancel_workflow`` is the 0.4 import path, see ``lifecycle``)."""


def __getattr__(name: str) -> object:
    if name == "cancel_workflow":
        from pyworkflow.core.lifecycle import cancel_workflow

        return cancel_workflow
    raise AttributeError(f"module 'pyworkflow.core' has no attribute {name!r}")
