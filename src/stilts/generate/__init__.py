"""The offline generated task suite (see suite.py for what each task tests)."""
