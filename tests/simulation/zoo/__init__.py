"""The bug zoo: engine mutants the simulator must catch (see ``test_zoo.py``)."""
