"""Hardware half of the generator: streaming systolic layers, networks, boards, builds."""

__all__ = []
