"""Parameter checks shared by the hardware components, with the messages tests pin down."""

import operator

__all__ = ["check_int"]


def check_int(what, value, minimum=1):
    """Return ``value`` as an ``int`` of at least ``minimum``.

    Raises
    ------
    TypeError
        If ``value`` is not an integer (``bool`` included).
    ValueError
        If it is below ``minimum``.
    """
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an int, not {value!r}") from None
    if value < minimum:
        raise ValueError(f"{what} must be at least {minimum}, not {value}")
    return value
