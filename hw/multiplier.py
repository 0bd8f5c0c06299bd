"""Exact products for the MAC lanes: a hard multiplier, one built of LUTs, or two packed in one.

A MAC lane multiplies an input ``x`` (``in_shape``: unsigned ``1..16`` or signed ``2..16`` bits)
by a weight ``w`` of ``N = 2..16`` bits, stored as its ``N``-bit two's complement code, in the
symmetric range ``-(2**(N-1)-1) .. 2**(N-1)-1`` of ``docs/numerics.md`` (1-bit weights never
multiply: the MAC array adds or subtracts). Every kind below gives the exact product, which fits
``signed(k)`` with ``k = product_bits(N, in_shape)`` the smallest width that holds every
product of those ranges. Some products come as ``value + borrow``, a 1-bit ``borrow`` that
the MAC array's partial-sum adder takes as its carry-in, so that no adder is spent on it
(the first SIMD lane, which has no such adder, hands its borrow along the chain to the
accumulator's adder).

``"dsp"``
    ``x * w``: Yosys maps it to one hard multiplier (ECP5 ``MULT18X18D``; iCE40 ``SB_MAC16``
    with ``synth_ice40 -dsp`` when the product has at least 11 bits, a LUT multiplier below).
    The only kind for operands wider than :data:`PROVEN_BITS` (:func:`lut_buildable`), which
    must then fit the hard multiplier's signed operands (:func:`fits_hard`).

``"lut"``
    Shift-and-add with radix-4 Booth digits, which Yosys keeps in LUTs and carry chains.
    Booth recoding writes ``w = sum_i e_i 4**i`` over ``D = ceil(N/2)`` digits
    ``e_i = b[2i-1] + b[2i] - 2 b[2i+1]`` in ``{-2, -1, 0, 1, 2}``, from ``w``'s bits ``b``
    (``b[-1] = 0``, sign-extended to ``2D`` bits). Row ``i`` is ``e_i * x = (m ^ s) + s``
    with ``m = |e_i| * x`` (``0``, ``x`` or ``2x``: a multiplexer), ``s = [e_i < 0]`` and
    ``m ^ s`` every bit of ``m`` inverted when ``s`` (``~m = -m - 1``). Adding row ``i`` at
    weight ``2**t``, ``t = 2i``, leaves the ``t`` low bits of the running sum ``A`` alone::

        A + (e_i * x) * 2**t = Cat(A[:t], (A >> t) + (m ^ s) + s)

    and the ``+ s`` is that adder's carry-in. Row 0 needs no adder: the running sum starts
    as row 0's ``m ^ s`` and its ``s`` is the product's borrow, which the MAC array's
    partial-sum adder takes as its carry-in. So the multiplier is ``D - 1`` carry-chain
    adders, each only as wide as the bits it changes, and no negation anywhere: none for
    2-bit weights (a multiplexer), one for 3 and 4 bits, three for 8 bits. Each running sum
    is a signal marked ``keep``: without it Yosys' ``alumacc`` merges the rows into one
    multi-operand sum and maps it to full adders in plain LUTs, which took 1.5 to 2.5 times
    the LUT4s of an 8x8 product on ECP5 when we measured it.

``"packed"``
    Two products that share the input, ``p_a = w_a * x`` and ``p_b = w_b * x`` (two PEs that
    see the same ``x``), from one hard multiplier. With ``k = product_bits``::

        P = (w_a + 2**k * w_b) * x = p_a + 2**k * p_b

    *Low product.* ``P mod 2**k = p_a mod 2**k`` and ``p_a`` fits ``k`` signed bits, so
    ``p_a = P[:k]`` read as signed.

    *High product.* ``P >> k`` (arithmetic, i.e. floor) is ``p_b + floor(p_a / 2**k)``,
    which is ``p_b - 1`` when ``p_a < 0`` and ``p_b`` otherwise; ``p_a < 0`` is exactly its
    sign bit ``P[k-1]``, so ``p_b = (P >> k) + P[k-1]``. As for ``"lut"``, the MAC array
    adds ``P >> k`` and the *borrow* ``P[k-1]`` to its partial sum, the borrow as the
    adder's carry-in: no adder of its own.

    *Operand.* ``w_a + 2**k * w_b = sext_k(w_a) + 2**k * (w_b - [w_a < 0])``: the
    concatenation of ``w_a`` sign-extended to ``k`` bits and the *high code*
    ``c = w_b - [w_a < 0]``. With symmetric weights ``c`` lies in
    ``-2**(N-1) .. 2**(N-1)-1`` and keeps ``N`` bits, so the MAC array stores ``c`` instead
    of ``w_b`` in the second PE's ROM (:func:`high_codes`) and the operand is plain wiring.

    ``k`` is the smallest shift that works: ``p_a`` takes ``2 * max|p_a| + 1`` values, which
    need ``k`` bits (the ranges are symmetric). The packed operand has ``k + N`` bits and the
    input ``a + 1`` (unsigned ``a`` bits, made signed) or ``a`` (signed); both must fit the
    hard multiplier's signed operands, ``dsp_width`` bits (:data:`DSP_WIDTHS`: 18 on ECP5,
    16 on iCE40), and then the ``2 * dsp_width``-bit product holds ``P``.
    :func:`packing_shift` refuses anything wider. So 4-bit weights pack with inputs up to
    8 bits on both families, 5-bit weights with up to 8 bits on ECP5 and 6 on the iCE40,
    8-bit weights only with 1-bit inputs (and 2-bit ones, or signed 3-bit, on ECP5).

``"constant"``
    Weights known when the hardware is built, one per lane for good (a layer folded so that
    every weight has a lane of its own: ``PE = channels``, ``SIMD = fan_in``): no ROM and no
    multiplier. Each weight is written in canonical signed digits (:func:`signed_digits`,
    ``w = sum_j s_j 2**t_j`` with ``s_j = +-1``, never two adjacent digits: at most
    ``ceil(N / 2)`` of them, 2 for 4-bit weights), so a PE's sum
    ``sum_k w_k x_k = sum_(k, j) s_kj x_k 2**t_kj`` is a sum of shifted inputs.
    :func:`constant_sum` adds the digits of sign ``+1`` in one adder tree and those of sign ``-1``
    in another, and subtracts the two roots: one negation per PE, none per digit. An adder of
    two shifted terms takes the lower term's low bits as they are, so it is only as wide as
    the bits where they overlap. Sums are registered after every
    :data:`CONSTANT_ADDERS_PER_REGISTER` levels of adders (and the difference): a register
    behind every adder would mostly hold bits no adder made (the passed low bits, the trees'
    odd nodes), flip-flops that an iCE40 logic cell cannot pack beside a LUT. Zero weights
    cost nothing; a weight of one digit is wiring.

``tests/test_hw_multiplier.py`` drives every operand pair of every LUT-built unit and every
operand triple of every packed unit through the hardware (Verilator), against ``x * w``, and
every weight of every width through :func:`constant_sum` with every input, for weights and
inputs of up to :data:`PROVEN_BITS` bits; wider operands are not built of LUTs.
"""

import functools

from amaranth.hdl import C, Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from sw.qmodel import MAX_BITS, signed_bits, value_range, weight_range

from .params import check_in_shape, check_int

__all__ = ["CONSTANT_ADDERS_PER_REGISTER", "DSP_WIDTHS", "KINDS", "MULTIPLIER_KINDS",
           "PROVEN_BITS", "Multiplier", "constant_depth", "constant_levels", "constant_sum",
           "constant_terms", "fits_hard", "hard_only", "high_codes", "lane_problem",
           "lut_buildable", "lut_product", "max_digits", "packed_products", "packing_shift",
           "product_bits", "product_range", "signed_digits"]

#: The kinds of a :class:`Multiplier`: a weight comes in as a code.
MULTIPLIER_KINDS = ("dsp", "lut", "packed")
#: The kinds of a MAC array's lanes: a :class:`Multiplier`'s, or constant weights.
KINDS = (*MULTIPLIER_KINDS, "constant")
#: Width of the signed operands of one hard multiplier: ECP5 ``MULT18X18D`` is 18x18,
#: iCE40 UP5K ``SB_MAC16`` 16x16.
DSP_WIDTHS = {"ecp5": 18, "ice40": 16}
#: The widest weights and inputs, in bits, of the LUT-built and packed products: the width up
#: to which tests/test_hw_multiplier.py proves them exact for every operand pair (triple).
PROVEN_BITS = 8
#: Levels of adders between registers in :func:`constant_sum`: two carry chains of ~12 bits
#: in a cycle (about 10 ns on the iCE40 UP5K), half the flip-flops of a register per level.
CONSTANT_ADDERS_PER_REGISTER = 2


def lut_buildable(weight_bits, in_shape):
    """Whether ``"lut"`` and ``"packed"`` products may serve ``weight_bits`` weights and
    ``in_shape`` inputs: both at most :data:`PROVEN_BITS` wide."""
    return weight_bits <= PROVEN_BITS and in_shape.width <= PROVEN_BITS


def fits_hard(weight_bits, in_shape, dsp_width):
    """Whether one hard multiplier of ``dsp_width``-bit signed operands takes the product
    of a ``weight_bits`` weight and an ``in_shape`` input (unsigned inputs take a sign bit
    more)."""
    return max(weight_bits, in_shape.width + (0 if in_shape.signed else 1)) <= dsp_width


def _operands(weight_bits, in_shape):
    return (f"{weight_bits}-bit weights times {in_shape.width}-bit "
            f"{'signed' if in_shape.signed else 'unsigned'} inputs")


def hard_only(weight_bits, in_shape):
    """Why ``weight_bits`` weights times ``in_shape`` inputs need hard multipliers (a message:
    they are wider than :data:`PROVEN_BITS`), or None (1-bit weights add or subtract)."""
    if weight_bits == 1 or lut_buildable(weight_bits, in_shape):
        return None
    return (f"{_operands(weight_bits, in_shape)} multiply on hard multipliers only (LUT-built "
            f"products are proven up to {PROVEN_BITS} bits)")


def lane_problem(kind, weight_bits, in_shape, dsp_width, all_hard=True):
    """Why lanes of ``kind`` cannot multiply ``weight_bits`` weights by ``in_shape`` inputs
    (a message), or None. ``all_hard``: every SIMD lane uses ``kind`` (the others would be
    LUT-built). Operands wider than :data:`PROVEN_BITS` need ``"dsp"`` on every lane
    (:func:`hard_only`), and a ``"dsp"`` product must fit the ``dsp_width``-bit hard
    multiplier."""
    if weight_bits == 1:  # added or subtracted
        return None
    wide = hard_only(weight_bits, in_shape)
    if wide and (kind != "dsp" or not all_hard):
        return f"{wide}: multiplier 'dsp' with every lane hard"
    if kind == "dsp" and not fits_hard(weight_bits, in_shape, dsp_width):
        return (f"{_operands(weight_bits, in_shape)} do not fit a {dsp_width}x{dsp_width} signed "
                f"hard multiplier (an unsigned input takes a sign bit more)")
    return None


def product_range(weight_bits, in_shape):
    """``(lo, hi)``: the extremes of ``w * x`` over the weight and input ranges."""
    xlo, xhi = value_range(in_shape.width, in_shape.signed)
    products = [x * w for x in (xlo, xhi) for w in weight_range(weight_bits)]
    return min(products), max(products)


def product_bits(weight_bits, in_shape):
    """Signed width of every product of a ``weight_bits`` weight and an ``in_shape`` input."""
    return signed_bits(*product_range(weight_bits, in_shape))


def packing_shift(weight_bits, in_shape, dsp_width=DSP_WIDTHS["ecp5"]):
    """The shift ``k`` of a packed pair, after checking that it fits one hard multiplier.

    Parameters
    ----------
    weight_bits : int
        2..8.
    in_shape : Shape
        The shared input's shape.
    dsp_width : int
        Width of the hard multiplier's signed operands (:data:`DSP_WIDTHS`).

    Returns
    -------
    int
        ``k = product_bits(weight_bits, in_shape)``: the high product's weight is ``2**k``.

    Raises
    ------
    ValueError
        If the packed operand (``k + weight_bits`` bits) or the input does not fit
        ``dsp_width`` signed bits.
    """
    shift = product_bits(weight_bits, in_shape)
    operand = shift + weight_bits
    input_bits = in_shape.width + (0 if in_shape.signed else 1)
    if max(operand, input_bits) > dsp_width:
        raise ValueError(f"packed products of {weight_bits}-bit weights and {in_shape!r} inputs "
                         f"need a {operand}x{input_bits}-bit signed multiplier, wider than "
                         f"{dsp_width}x{dsp_width}; use multiplier 'dsp' or 'lut'")
    return shift


def high_codes(weights_a, weights_b):
    """The second weight of each packed pair as stored: ``w_b - [w_a < 0]`` (elementwise).

    With it the packed operand is the plain concatenation of ``w_a`` (sign-extended) and
    this code; see the module's derivation. Works on ints and numpy arrays alike.
    """
    return weights_b - (weights_a < 0)


def _signed_view(x):
    """``x`` as a signed value of the same numeric range (unsigned gains a zero top bit)."""
    x = Value.cast(x)
    return x if x.shape().signed else Cat(x, C(0, 1)).as_signed()


def _extend(value, width):
    """Signed ``value`` sign-extended to at least ``width`` bits (an expression)."""
    pad = width - len(value)
    return value if pad <= 0 else Cat(value, value[-1].replicate(pad)).as_signed()


def lut_product(m, x, code, *, name):
    """``x`` times the two's complement weight ``code``, built of LUTs and carry chains.

    Radix-4 Booth rows, each digit's negation the carry-in of the adder that adds its row,
    the first one's left to the consumer (module docstring). Exact for every input of
    ``x``'s shape and every code; every running sum is as wide as its own range, so none
    wraps around.

    Parameters
    ----------
    m : Module
        Where the logic goes.
    x : Value
        The input, signed or unsigned.
    code : Value
        ``N >= 2`` bits, the weight's two's complement code.
    name : str
        Prefix of the signals made here.

    Returns
    -------
    (Value, Value)
        ``value`` and the 1-bit ``borrow``: the product is ``value + borrow``, which fits
        ``signed(product_bits(N, x.shape()))`` for every weight of the symmetric range.
    """
    x, code = Value.cast(x), Value.cast(code)
    bits = len(code)
    xs = _signed_view(x)
    xlo, xhi = value_range(x.shape().width, x.shape().signed)

    def width(coefficient_bits):
        # Any coefficient of that many signed bits times any input, minus the borrow.
        lo, hi = -(1 << (coefficient_bits - 1)), (1 << (coefficient_bits - 1)) - 1
        products = [c * v for c in (lo, hi) for v in (xlo, xhi)]
        return signed_bits(min(products) - 1, max(products))

    # w's bits with b[-1] = 0 in front, sign-extended to an even number of bits.
    b = [C(0, 1), *(code[i] for i in range(bits))]
    if bits % 2:
        b.append(code[bits - 1])
    row_bits = len(xs) + 1
    total = borrow = None
    for i in range((len(b) - 1) // 2):
        low, mid, high = b[2 * i], b[2 * i + 1], b[2 * i + 2]
        one = low ^ mid
        two = (high & ~mid & ~low) | (~high & mid & low)
        negative = high & ~(mid & low)  # 111 is +0, kept as a zero row
        row = Signal(signed(row_bits), name=f"{name}_digit{i}")
        m.d.comb += row.eq(Mux(one, xs, Mux(two, xs << 1, 0)) ^ negative.replicate(row_bits))
        if total is None:
            total, borrow = row, negative
            continue
        shift = 2 * i
        # After digit i the sum is (the low 2i + 2 bits of w, signed) * x - borrow; the last
        # digit covers all of w's bits. The running sum is sign-extended so that it has its
        # ``shift`` low bits and at least one bit above them.
        new_bits = max(width(min(2 * i + 2, bits)), shift + 1)
        total = _extend(total, new_bits)
        upper = Signal(signed(new_bits - shift), name=f"{name}_sum{i}", attrs={"keep": 1})
        m.d.comb += upper.eq(total[shift:].as_signed() + row + negative)
        total = Cat(total[:shift], upper).as_signed()
    return total, borrow


def packed_products(m, x, code_a, code_high, *, shift, name):
    """``w_a * x`` and ``w_b * x`` (less a borrow) from one multiplication by a packed operand.

    Parameters
    ----------
    m : Module
    x : Value
        The shared input.
    code_a : Value
        ``N`` bits: ``w_a``'s two's complement code.
    code_high : Value
        ``N`` bits: the code of ``w_b - [w_a < 0]`` (:func:`high_codes`).
    shift : int
        ``k`` from :func:`packing_shift` (checked there against the hard multiplier).
    name : str
        Prefix of the signals made here.

    Returns
    -------
    (Value, Value, Value)
        ``p_a`` (``signed(shift)``), ``P >> k`` and the borrow ``P[k-1]``: ``p_b`` is
        ``(P >> k) + P[k-1]``, left to the adder that consumes it (as its carry-in).
    """
    x, code_a, code_high = Value.cast(x), Value.cast(code_a), Value.cast(code_high)
    bits = len(code_a)
    operand = Cat(code_a, code_a[bits - 1].replicate(shift - bits), code_high).as_signed()
    product = Signal(signed(len(operand) + len(_signed_view(x))), name=f"{name}_packed")
    m.d.comb += product.eq(operand * x)
    return product[:shift].as_signed(), product[shift:].as_signed(), product[shift - 1]


def signed_digits(weight):
    """``weight``'s canonical signed digits (its non-adjacent form), lowest first.

    Returns
    -------
    list of (int, int)
        ``(shift, sign)`` pairs, ``sign`` +1 or -1, with ``weight = sum(sign * 2**shift)``; no
        two shifts adjacent, so the fewest nonzero digits of any signed-digit form.
    """
    digits, value, shift = [], int(weight), 0
    while value:
        if value & 1:
            sign = 2 - (value & 3)  # +1 or -1: what is left is a multiple of 4
            digits.append((shift, sign))
            value -= sign
        value >>= 1
        shift += 1
    return digits


@functools.cache
def max_digits(weight_bits):
    """The most signed digits (:func:`signed_digits`) of any ``weight_bits`` weight."""
    lo, hi = weight_range(weight_bits)
    return max(len(signed_digits(w)) for w in range(lo, hi + 1))


def constant_depth(terms):
    """Levels of adders of a tree over ``terms`` terms: ``ceil(log2(terms))``."""
    return max(terms - 1, 0).bit_length()


def constant_levels(depth):
    """Registered levels of :func:`constant_sum` with trees of ``depth`` levels of adders: one
    every :data:`CONSTANT_ADDERS_PER_REGISTER` levels, and one behind the difference."""
    return depth // CONSTANT_ADDERS_PER_REGISTER + 1


def constant_terms(weights):
    """The shifted terms of ``sum_k weights[k] * x_k``: ``(plus, minus)``, lists of
    ``(k, shift)``, the digits of sign +1 and -1 of every weight (:func:`signed_digits`)."""
    plus, minus = [], []
    for k, weight in enumerate(weights):
        for shift, sign in signed_digits(weight):
            (plus if sign > 0 else minus).append((k, shift))
    return plus, minus


def _add_shifted(a, b, subtract=False):
    """``a + b`` (or ``a - b``) of two ``(value, shift)`` terms meaning ``value * 2**shift``.

    The result keeps the lower shift; when that is ``a``'s, ``a``'s low bits below ``b`` are
    passed as they are and only the overlap is added.
    """
    (va, sa), (vb, sb) = a, b
    va, vb = Value.cast(va), Value.cast(vb)
    if sb < sa:
        # The subtrahend is the lower term: align the minuend to it (a full-width adder).
        return ((va << (sa - sb)) - vb if subtract else vb + (va << (sa - sb))), sb
    gap = sb - sa
    if gap == 0:
        return (va - vb if subtract else va + vb), sa
    if len(va) <= gap:  # give the lower term a bit above the gap: its sign (or 0)
        va = _extend(va, gap + 1) if va.shape().signed else Cat(va, C(0, gap + 1 - len(va)))
    rest = va.shift_right(gap)
    high = rest - vb if subtract else rest + vb
    value = Cat(va[:gap], high)
    return (value.as_signed() if high.shape().signed else value), sa


def _tree(m, terms, depth, name):
    """``terms`` (``(value, shift)``) summed by a tree of ``depth`` levels of adders, registered
    after every :data:`CONSTANT_ADDERS_PER_REGISTER`-th (a node without a partner passes, and
    is registered where the level is); ``(0, 0)`` for no terms."""
    if not terms:
        return C(0, 1), 0
    nodes = list(terms)
    for level in range(1, depth + 1):
        joined = []
        for j in range(0, len(nodes), 2):
            pair = nodes[j:j + 2]
            value, shift = _add_shifted(*pair) if len(pair) == 2 else pair[0]
            value = Value.cast(value)
            if level % CONSTANT_ADDERS_PER_REGISTER == 0:
                register = Signal(value.shape(), name=f"{name}_l{level}_{j // 2}",
                                  reset_less=True)
                m.d.sync += register.eq(value)
                value = register
            elif len(pair) == 2:
                # Kept, as lut_product's running sums are: else Yosys' alumacc merges the
                # adders of a cycle into one multi-operand sum of LUT full adders.
                wire = Signal(value.shape(), name=f"{name}_l{level}_{j // 2}",
                              attrs={"keep": 1})
                m.d.comb += wire.eq(value)
                value = wire
            joined.append((value, shift))
        nodes = joined
    if len(nodes) != 1:
        raise ValueError(f"{len(terms)} terms need more than {depth} levels of adders")
    return nodes[0]


def constant_sum(m, lanes, weights, *, depth, name):
    """``sum_k weights[k] * lanes[k]`` for integer ``weights`` fixed at build time, registered.

    The digits of sign +1 and -1 (:func:`constant_terms`) are summed in two adder trees of
    ``depth`` levels, registered every :data:`CONSTANT_ADDERS_PER_REGISTER` levels, and the
    difference of their roots is registered: the result comes
    ``constant_levels(depth)`` cycles after ``lanes``.

    Parameters
    ----------
    m : Module
    lanes : list of Value
        The inputs, signed or unsigned.
    weights : list of int
        One per lane, any integers.
    depth : int
        Levels of adders of each tree: at least :func:`constant_depth` of the larger of the
        two trees' term counts.
    name : str
        Prefix of the signals made here.

    Returns
    -------
    Signal
        Signed, as wide as the sum of the given lanes and weights can be.
    """
    plus, minus = constant_terms(weights)
    roots = [_tree(m, [(lanes[k], shift) for k, shift in terms], depth, f"{name}_{sign}")
             for sign, terms in (("plus", plus), ("minus", minus))]
    value, shift = _add_shifted(*roots, subtract=True)
    value = Value.cast(value) << shift
    total = Signal(value.shape(), name=name, reset_less=True)  # a difference: signed
    m.d.sync += total.eq(value)
    return total


class Multiplier(wiring.Component):
    """One product (``"dsp"``, ``"lut"``) or a packed pair (``"packed"``) of a shared input.

    The building block of the MAC lanes, as a component of its own so that tests can drive
    every operand pair through the hardware (the MAC array builds the same logic in place
    with :func:`lut_product` and :func:`packed_products`).

    Parameters
    ----------
    kind : {"dsp", "lut", "packed"}
        See the module docstring.
    weight_bits : int
        2..16 (1-bit weights add or subtract and need no multiplier); ``"lut"`` and
        ``"packed"`` take weights and inputs of up to :data:`PROVEN_BITS` bits.
    in_shape : Shape
        The input's shape.
    dsp_width : int
        Width of the hard multiplier's signed operands (:data:`DSP_WIDTHS`), which
        ``"dsp"``'s operands and ``"packed"``'s pair must fit.

    Attributes
    ----------
    x : Signal(in_shape), in
    w : View(ArrayLayout(unsigned(weight_bits), count)), in
        Weight codes: ``count`` is 2 for ``"packed"`` (lane 0 ``w_a``, lane 1 the high code
        of :func:`high_codes`) and 1 otherwise.
    p : View(ArrayLayout(signed(product_bits), count)), out
        The exact products, combinational: ``p[0] = w_a * x`` (and ``p[1] = w_b * x``);
        the borrows are added here (in the MAC array the partial-sum adders take them).

    Raises
    ------
    TypeError
        If a parameter has the wrong type.
    ValueError
        If ``kind`` is unknown, ``weight_bits`` is outside 2..16, the operands are too wide
        for ``kind``, or they (a packed pair) do not fit the hard multiplier.
    """

    def __init__(self, kind, *, weight_bits, in_shape, dsp_width=DSP_WIDTHS["ecp5"]):
        if kind not in MULTIPLIER_KINDS:
            raise ValueError(f"kind must be one of {', '.join(map(repr, MULTIPLIER_KINDS))}, "
                             f"not {kind!r}")
        weight_bits = check_int("weight_bits", weight_bits)
        if not 2 <= weight_bits <= MAX_BITS:
            raise ValueError(f"weight_bits must be in 2..{MAX_BITS}, not {weight_bits} (1-bit "
                             f"weights add or subtract)")
        in_shape = check_in_shape(in_shape)
        dsp_width = check_int("dsp_width", dsp_width, minimum=2)
        problem = lane_problem(kind, weight_bits, in_shape, dsp_width)
        if problem:
            raise ValueError(problem)
        self._kind, self._weight_bits, self._in_shape = kind, weight_bits, in_shape
        self._product_bits = product_bits(weight_bits, in_shape)
        self._shift = (packing_shift(weight_bits, in_shape, dsp_width) if kind == "packed"
                       else None)
        count = 2 if kind == "packed" else 1
        super().__init__({
            "x": In(in_shape),
            "w": In(data.ArrayLayout(unsigned(weight_bits), count)),
            "p": Out(data.ArrayLayout(signed(self._product_bits), count)),
        })

    @property
    def kind(self):
        return self._kind

    @property
    def weight_bits(self):
        return self._weight_bits

    @property
    def in_shape(self):
        return self._in_shape

    @property
    def product_bits(self):
        return self._product_bits

    @property
    def shift(self):
        """``k`` of a packed pair (``None`` for the other kinds)."""
        return self._shift

    def elaborate(self, platform):
        m = Module()
        codes = self.w.as_value()
        bits = self._weight_bits
        if self._kind == "packed":
            low, high, borrow = packed_products(m, self.x, codes[:bits], codes[bits:],
                                                shift=self._shift, name="pair")
            m.d.comb += [self.p[0].eq(low), self.p[1].eq(high + borrow)]
        elif self._kind == "lut":
            value, borrow = lut_product(m, self.x, codes, name="lut")
            m.d.comb += self.p[0].eq(value + borrow)
        else:
            m.d.comb += self.p[0].eq(self.x * codes.as_signed())
        return m
