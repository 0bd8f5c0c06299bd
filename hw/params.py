"""Parameter checks shared by the hardware components, with the messages tests pin down."""

import operator

from amaranth.hdl import Shape

__all__ = ["check_in_shape", "check_int"]


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


def check_in_shape(in_shape):
    """Return ``in_shape``, an Amaranth ``Shape`` of at least one bit (an input element's).

    Raises
    ------
    TypeError
        If it is not a ``Shape``.
    ValueError
        If it is zero bits wide.
    """
    if not isinstance(in_shape, Shape):
        raise TypeError(f"in_shape must be an Amaranth Shape such as unsigned(8), not "
                        f"{in_shape!r}")
    if in_shape.width < 1:
        raise ValueError(f"in_shape must be at least 1 bit wide, not {in_shape!r}")
    return in_shape
