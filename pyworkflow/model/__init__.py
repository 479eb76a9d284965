"""The data model: events, the records storage keeps, and the exception hierarchy.

Pure data, the bottom layer: these modules import nothing of the package but each other, so every
layer above (serialization, storage, the engine, ...) can use them without depending on the
others. The old paths (``pyworkflow.engine.events``, ``pyworkflow.storage.schemas``,
``pyworkflow.core.exceptions``) keep working as re-exports.
"""
