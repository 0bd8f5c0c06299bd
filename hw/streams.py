"""Stream conventions shared by the components, written once.

Every link between layers carries a vector of lanes: :func:`lanes_signature`. And
Amaranth's stream documentation builds a registered pipeline stage from one condition: the
output register may load a new payload when it is empty or its payload is taken this cycle.
Stages that hold their output in a register (requantizer, argmax, window generator, UART
receiver, image feeder, pool) use :func:`may_load` for it.
"""

from amaranth.lib import data, stream

__all__ = ["lanes_signature", "may_load"]


def lanes_signature(shape, count):
    """The stream signature of ``count`` lanes of ``shape`` (an ``ArrayLayout`` payload,
    lane 0 in the low bits), as every link between layers carries."""
    return stream.Signature(data.ArrayLayout(shape, count))


def may_load(valid, ready):
    """Whether an output register may take a new payload this cycle.

    Parameters
    ----------
    valid : Value
        The register's valid bit (the stream's ``valid``).
    ready : Value
        The stream's ``ready``, from downstream.

    Returns
    -------
    Value
        ``~valid | ready``: empty, or emptied this cycle. It never waits on the stage's own
        input, so ``ready`` upstream may be taken from it without a combinational loop.
    """
    return ~valid | ready
