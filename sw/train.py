"""Train a seed model on MNIST and save it as ``.keras``.

Command line::

    python -m sw.train --model lenet5 --epochs 30 --out models/lenet5.keras [--data DIR]
    python -m sw.train --model lenet5 --method dual-copy|randomized|iterative --bits 4
        [--act-bits 4] [--epochs 40] [--shares 0.5,0.75,0.875,1] [--out PATH]

``--qat`` is ``--method dual-copy``; the methods are ``docs/quantization.md``'s.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from .data import augmented_dataset, load_test, load_train, parse_data_arg
from .errors import UserError, cli_main
from .golden import classify
from .models import SEED_MODELS, build, load_float_net
from .qat import (
    ITERATIVE_SHARES,
    check_shares,
    save_qat,
    train_iterative,
    train_qat,
    verify_export,
)
from .qmodel import MAX_BITS
from .quantize import (
    CALIBRATION_IMAGES,
    TRAINED_METHODS,
    QuantConfig,
    check_bits,
    check_method,
    layer_widths,
    parse_layer_bits,
    widths_label,
)
from .trained import trained_model_path

__all__ = ["accuracy", "main", "train"]


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


def accuracy(model, images, labels, pixel_scale=1 / 255):
    """Float accuracy of a Keras model on ``uint8`` images."""
    shape = model.input_shape[1:]
    x = images.reshape(-1, *shape).astype(np.float32) * np.float32(pixel_scale)
    logits = model.predict(x, batch_size=512, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


#: ``--method`` help of the training methods.
_METHOD_DOCS = {
    "dual-copy": "a float copy of every weight, rounded to nearest in each forward pass, "
                 "straight-through gradients (--qat)",
    "randomized": "weights on their integer grid, each step's result rounded back "
                  "stochastically (seeded by --seed)",
    "iterative": "incremental quantization: freeze growing --shares of each layer's weights, "
                 "largest first, fine-tuning the rest",
}
#: What each training method prints as it starts.
_TRAINING_NAMES = {"dual-copy": "quantization-aware (dual-copy) training",
                   "randomized": "randomized (stochastic rounding) training",
                   "iterative": "iterative (incremental) quantization"}


def _training_method(args):
    """The training method ``--method``/``--qat`` ask for, or ``None`` for float training."""
    method = None if args.method is None else check_method(args.method)
    if args.qat:
        if method not in (None, "dual-copy"):
            raise UserError(f"--qat is --method dual-copy; it conflicts with --method "
                            f"{args.method}")
        method = "dual-copy"
    if method is not None and method not in TRAINED_METHODS:
        raise UserError(f"--method {method} quantizes a trained model (python -m sw.quantize "
                        f"or sw.evaluate --method {method}); sw.train trains "
                        f"{', '.join(TRAINED_METHODS)}")
    return method


def _quantized_main(args, method):
    """``--method dual-copy|randomized|iterative``: train through the integer numerics."""
    if args.bits is None:
        raise UserError(f"{'--qat' if args.qat else f'--method {method}'} needs --bits N "
                        f"(1..{MAX_BITS})")
    weight_bits = check_bits(args.bits, "--bits")
    act_bits = check_bits(args.act_bits or weight_bits, "--act-bits")
    if not args.lr > 0 or args.calibration < 1:
        raise UserError("--lr and --calibration must be positive")
    if method == "iterative":
        if args.recalibrate is not None:
            raise UserError("--recalibrate does not apply to --method iterative (its fractions "
                            "stay fixed while weights are frozen)")
        shares = check_shares(ITERATIVE_SHARES if args.shares is None else
                              args.shares.split(","), args.epochs)
    elif args.shares is not None:
        raise UserError("--shares needs --method iterative")
    if args.recalibrate is not None and not 0 <= args.recalibrate < args.epochs:
        raise UserError(f"--recalibrate must be in 0..epochs-1, not {args.recalibrate}")
    layer_bits = args.layer_bits or ()
    fnet = load_float_net(args.model)
    # A layer name the network does not have fails before the training images load.
    layer_widths(fnet, QuantConfig(weight_bits=weight_bits, act_bits=act_bits,
                                   layer_bits=layer_bits))
    images, labels = load_train(args.data)
    if args.out is not None:
        out = Path(args.out)
    else:  # in models/ for a seed, beside the float file for a file
        out = trained_model_path(fnet.name, weight_bits, act_bits, method,
                                 None if args.model in SEED_MODELS else Path(args.model).parent,
                                 layer_bits)
    epochs = args.epochs
    print(f"{_TRAINING_NAMES[method]} of {fnet.name} at "
          f"{widths_label(weight_bits, act_bits, layer_bits)} on {len(images)} images for "
          f"{epochs} epochs", file=sys.stderr)
    options = {"epochs": epochs, "batch_size": args.batch_size, "learning_rate": args.lr,
               "seed": args.seed, "calibration": args.calibration,
               "verbose": 1 if sys.stderr.isatty() else 2, "layer_bits": layer_bits}
    training = {"method": method, "float_model": str(args.model), "images": len(images),
                "epochs": epochs, "batch_size": args.batch_size, "learning_rate": args.lr,
                "seed": args.seed, "calibration_images": args.calibration}
    start = time.monotonic()
    if method == "iterative":
        training["shares"] = list(shares)
        model, fractions = train_iterative(fnet, images, labels, weight_bits, act_bits,
                                           shares=shares, **options)
    else:
        recalibrate = epochs // 4 if args.recalibrate is None else args.recalibrate
        training["recalibrate_after"] = recalibrate
        model, fractions = train_qat(fnet, images, labels, weight_bits, act_bits,
                                     recalibrate_after=recalibrate, method=method, **options)
    seconds = time.monotonic() - start
    training["seconds"] = round(seconds, 1)
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
    parser = argparse.ArgumentParser(prog="python -m sw.train", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True,
                        help=f"seed model ({', '.join(SEED_MODELS)}); with --method also a "
                             f".keras/.h5 file")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help=parse_data_arg.__doc__)
    parser.add_argument("--out", default=None, help="output .keras file (with --method default: "
                        "models/M-wNaA.keras for dual-copy, models/M-wNaA-METHOD.keras for "
                        "the others, beside the float model)")
    parser.add_argument("--method", default=None,
                        help="fine-tune the trained float model through the integer numerics: "
                             + "; ".join(f"{name}: {_METHOD_DOCS[name]}"
                                         for name in TRAINED_METHODS)
                             + " (docs/quantization.md)")
    parser.add_argument("--qat", action="store_true", help="the same as --method dual-copy")
    parser.add_argument("--bits", default=None,
                        help=f"--method: weight and activation bits, 1..{MAX_BITS}")
    parser.add_argument("--act-bits", default=None, help="--method: activation bits (default: "
                        "--bits)")
    parser.add_argument("--layer-bits", default=None, type=parse_layer_bits,
                        help="--method: per-layer widths over --bits/--act-bits, e.g. "
                             "first=8,last=8 or conv2d=8/4 (weights/activations)")
    parser.add_argument("--lr", type=float, default=2e-3,
                        help="--method: initial learning rate (cosine decay; default 2e-3)")
    parser.add_argument("--calibration", type=int, default=CALIBRATION_IMAGES,
                        help="--method: training images that choose the fractions (default "
                             f"{CALIBRATION_IMAGES})")
    parser.add_argument("--recalibrate", type=int, default=None, metavar="E",
                        help="dual-copy, randomized: re-choose the fractions once after E epochs "
                             "(default: a quarter of the epochs; 0 keeps the post-training ones)")
    parser.add_argument("--shares", default=None,
                        help="iterative: cumulative shares of each layer's weights quantized "
                             "per step, largest first (default "
                             f"{','.join(f'{v:g}' for v in ITERATIVE_SHARES)}); --epochs are "
                             "split over the fine-tuning between steps")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, not {args.epochs}")
    if args.out is not None and Path(args.out).suffix != ".keras":
        raise UserError(f"--out {args.out!r} must end in .keras")
    method = _training_method(args)
    if method is not None:
        _quantized_main(args, method)
        return
    if args.bits is not None or args.act_bits is not None or args.layer_bits:
        raise UserError("--bits, --act-bits and --layer-bits need --qat or --method (float "
                        "training has no bit width)")
    if args.model not in SEED_MODELS:
        raise UserError(f"unknown model {args.model!r}; seed models: {', '.join(SEED_MODELS)} "
                        f"(a .keras/.h5 file needs --qat or --method)")
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
