"""``python -m pyworkflow.cli``: the ``pyworkflow`` command."""

from __future__ import annotations

from pyworkflow.cli import main

if __name__ == "__main__":  # pragma: no cover
    main(prog_name="pyworkflow")
