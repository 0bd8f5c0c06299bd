"""``python -m hw.build``: from a quantized Keras model to a bitstream (in progress)."""

import sys

__all__ = ["main"]


def main(argv=None):
    print("error: hw.build is not built yet: the network generator has not landed",
          file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
