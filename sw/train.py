"""Train a seed model on MNIST and save it as ``.keras``.

Command line::

    python -m sw.train --model lenet5 --epochs 30 --out models/lenet5.keras [--data DIR]
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from .errors import UserError, cli_main
from .models import SEED_MODELS, build

__all__ = ["main", "train"]


def train(name, images, labels, *, epochs=40, batch_size=64, seed=0, verbose=1):
    """Train seed model ``name`` on ``uint8`` images (scaled by 1/255) and return it.

    Small random shifts and rotations augment the images: with the 5,000 offline training
    images they are worth about a point of test accuracy.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    model = build(name)
    steps = epochs * -(-len(images) // batch_size)
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
                      2e-3, steps, alpha=0.02)),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    augment = keras.Sequential([keras.layers.RandomTranslation(0.08, 0.08, seed=seed),
                                keras.layers.RandomRotation(0.03, seed=seed + 1)])
    x = images.reshape(-1, 28, 28, 1).astype(np.float32) / 255.0
    dataset = (tf.data.Dataset.from_tensor_slices((x, labels.astype(np.int32)))
               .shuffle(len(x), seed=seed).batch(batch_size)
               .map(lambda a, b: (augment(a, training=True), b)))
    model.fit(dataset, epochs=epochs, verbose=verbose)
    return model


def accuracy(model, images, labels, pixel_scale=1 / 255):
    """Float accuracy of a Keras model on ``uint8`` images."""
    shape = model.input_shape[1:]
    x = images.reshape(-1, *shape).astype(np.float32) * np.float32(pixel_scale)
    logits = model.predict(x, batch_size=512, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


@cli_main
def main(argv=None):
    from .data import load_test, load_train, parse_data_arg

    parser = argparse.ArgumentParser(prog="python -m sw.train", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, choices=sorted(SEED_MODELS))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help=parse_data_arg.__doc__)
    parser.add_argument("--out", required=True, help="output .keras file")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, not {args.epochs}")
    out = Path(args.out)
    if out.suffix != ".keras":
        raise UserError(f"--out {args.out!r} must end in .keras")
    images, labels = load_train(args.data)
    print(f"training {args.model} on {len(images)} images for {args.epochs} epochs",
          file=sys.stderr)
    model = train(args.model, images, labels, epochs=args.epochs, batch_size=args.batch_size,
                  seed=args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_suffix(".tmp.keras")
    model.save(temporary)
    os.replace(temporary, out)
    try:
        test_images, test_labels = load_test(args.data)
    except UserError as error:
        print(f"note: {error}; test accuracy not measured", file=sys.stderr)
        return
    print(f"test accuracy: {accuracy(model, test_images, test_labels):.4f} "
          f"on {len(test_images)} test images")


if __name__ == "__main__":
    main()
