"""cocotb + Verilator (or Icarus) testbenches of the generated Verilog against the golden model."""

__all__ = []
