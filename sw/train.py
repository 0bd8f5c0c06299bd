"""Train a seed model on MNIST and save it as ``.keras``.

Command line::

    python -m sw.train --model lenet5 --epochs 30 --out models/lenet5.keras [--data DIR]
    python -m sw.train --model lenet5 --qat --bits 4 [--act-bits 4] [--epochs 40] [--out PATH]
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from .errors import UserError, cli_main
from .models import SEED_MODELS, build

__all__ = ["accuracy", "augmented_dataset", "main", "train"]


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
    model.fit(augmented_dataset(images, labels, batch_size=batch_size, seed=seed),
              epochs=epochs, verbose=verbose)
    return model


def augmented_dataset(images, labels, *, batch_size=64, seed=0, raw=False):
    """Shuffled batches of ``images / 255`` (or raw) with random shifts and rotations.

    Parameters
    ----------
    images : ndarray of uint8, shape (N, 28, 28)
    labels : ndarray, shape (N,)
    batch_size, seed : int
    raw : bool
        Keep the pixels' ``0..255`` (quantization-aware training scales them itself).

    Returns
    -------
    tf.data.Dataset
        Of ``(float32 images (B, 28, 28, 1), int32 labels)``.
    """
    import keras
    import tensorflow as tf

    augment = keras.Sequential([keras.layers.RandomTranslation(0.08, 0.08, seed=seed),
                                keras.layers.RandomRotation(0.03, seed=seed + 1)])
    x = images.reshape(-1, 28, 28, 1).astype(np.float32)
    x = x if raw else x / 255.0
    return (tf.data.Dataset.from_tensor_slices((x, labels.astype(np.int32)))
            .shuffle(len(x), seed=seed).batch(batch_size)
            .map(lambda a, b: (augment(a, training=True), b)))


def accuracy(model, images, labels, pixel_scale=1 / 255):
    """Float accuracy of a Keras model on ``uint8`` images."""
    shape = model.input_shape[1:]
    x = images.reshape(-1, *shape).astype(np.float32) * np.float32(pixel_scale)
    logits = model.predict(x, batch_size=512, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def _qat_main(args):
    """``--qat``: fine-tune a float model through the integer numerics (:mod:`sw.qat`)."""
    import time

    from .data import load_test, load_train
    from .golden import classify
    from .models import SEED_MODELS, load_float_net
    from .qat import qat_model_path, save_qat, train_qat, verify_export
    from .quantize import check_bits

    if args.bits is None:
        raise UserError("--qat needs --bits N (1..8)")
    weight_bits = check_bits(args.bits, "--bits")
    act_bits = check_bits(args.act_bits or weight_bits, "--act-bits")
    if not args.lr > 0 or args.calibration < 1:
        raise UserError("--lr and --calibration must be positive")
    if args.recalibrate is not None and not 0 <= args.recalibrate < args.epochs:
        raise UserError(f"--recalibrate must be in 0..epochs-1, not {args.recalibrate}")
    fnet = load_float_net(args.model)
    images, labels = load_train(args.data)
    if args.out is not None:
        out = Path(args.out)
    elif args.model in SEED_MODELS:
        out = qat_model_path(args.model, weight_bits, act_bits)
    else:
        out = Path(args.model).with_name(f"{fnet.name}-w{weight_bits}a{act_bits}.keras")
    epochs = args.epochs
    recalibrate = epochs // 4 if args.recalibrate is None else args.recalibrate
    print(f"quantization-aware training of {fnet.name} at W{weight_bits}A{act_bits} on "
          f"{len(images)} images for {epochs} epochs", file=sys.stderr)
    start = time.monotonic()
    model, fractions = train_qat(fnet, images, labels, weight_bits, act_bits, epochs=epochs,
                                 batch_size=args.batch_size, learning_rate=args.lr,
                                 seed=args.seed, calibration=args.calibration,
                                 recalibrate_after=recalibrate,
                                 verbose=1 if sys.stderr.isatty() else 2)
    seconds = time.monotonic() - start
    training = {"float_model": str(args.model), "images": len(images), "epochs": epochs,
                "batch_size": args.batch_size, "learning_rate": args.lr, "seed": args.seed,
                "calibration_images": args.calibration, "recalibrate_after": recalibrate,
                "seconds": round(seconds, 1)}
    for path in save_qat(model, fractions, out, training):
        print(path)
    qmodel = verify_export(model, out, images[:64])
    print(f"trained in {seconds:.0f} s", file=sys.stderr)
    try:
        test_images, test_labels = load_test(args.data)
    except UserError as error:
        print(f"note: {error}; test accuracy not measured", file=sys.stderr)
        return
    classes, _ = classify(qmodel, test_images.reshape(len(test_images), *qmodel.input_shape))
    print(f"integer test accuracy: {np.mean(classes == test_labels):.4f} on "
          f"{len(test_images)} test images")


@cli_main
def main(argv=None):
    from .data import load_test, load_train, parse_data_arg

    parser = argparse.ArgumentParser(prog="python -m sw.train", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True,
                        help=f"seed model ({', '.join(SEED_MODELS)}); with --qat also a "
                             f".keras/.h5 file")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help=parse_data_arg.__doc__)
    parser.add_argument("--out", default=None, help="output .keras file (with --qat default: "
                        "models/M-wNaA.keras beside the float model)")
    parser.add_argument("--qat", action="store_true",
                        help="quantization-aware fine-tuning of the trained float model")
    parser.add_argument("--bits", default=None, help="--qat: weight bits, 1..8")
    parser.add_argument("--act-bits", default=None, help="--qat: activation bits (default: "
                        "--bits)")
    parser.add_argument("--lr", type=float, default=2e-3,
                        help="--qat: initial learning rate (cosine decay; default 2e-3)")
    parser.add_argument("--calibration", type=int, default=1000,
                        help="--qat: training images that choose the fractions (default 1000)")
    parser.add_argument("--recalibrate", type=int, default=None, metavar="E",
                        help="--qat: re-choose the fractions once after E epochs (default: a "
                             "quarter of the epochs; 0 keeps the post-training ones)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, not {args.epochs}")
    if args.out is not None and Path(args.out).suffix != ".keras":
        raise UserError(f"--out {args.out!r} must end in .keras")
    if args.qat:
        _qat_main(args)
        return
    if args.bits is not None or args.act_bits is not None:
        raise UserError("--bits and --act-bits need --qat (float training has no bit width)")
    if args.model not in SEED_MODELS:
        raise UserError(f"unknown model {args.model!r}; seed models: {', '.join(SEED_MODELS)} "
                        f"(a .keras/.h5 file needs --qat)")
    if args.out is None:
        raise UserError("--out FILE.keras is required without --qat")
    out = Path(args.out)
    epochs = args.epochs
    images, labels = load_train(args.data)
    print(f"training {args.model} on {len(images)} images for {epochs} epochs",
          file=sys.stderr)
    model = train(args.model, images, labels, epochs=epochs, batch_size=args.batch_size,
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
