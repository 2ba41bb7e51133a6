"""The one error a step raises when it fails for a reason worth telling:
its message is that reason, reported with the step (see run.py)."""


class Failed(Exception):
    pass
