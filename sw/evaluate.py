"""Float and integer-golden accuracy of a model per bit width, on the MNIST test set.

Command line::

    python -m sw.evaluate --model lenet5 --bits 8,4,2,1 --data ../shared/datasets/mnist \\
        [--method NAME] [--seed N] --json results.json [--plot accuracy.png]

``--method`` is any of ``sw.quantize``'s (``docs/quantization.md``).
"""

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .data import check_images, load_test, load_train, parse_data_arg
from .errors import UserError, cli_main
from .golden import classify
from .models import load_float_net, load_model
from .outputs import marker, prepare_file, write_file, write_json
from .quantize import (
    CALIBRATION_IMAGES,
    GRANULARITIES,
    METHOD_HELP,
    PRESETS,
    ROUNDINGS,
    QuantConfig,
    check_bits,
    check_method,
    parse_bits,
    parse_layer_bits,
    quantize,
    quantize_model,
)

__all__ = ["evaluate", "float_accuracy", "main"]


def float_accuracy(fnet, model, images, labels):
    """Accuracy of the Keras model itself, fed the pixels the way it expects them."""
    x = images.reshape(-1, *model.input_shape[1:]).astype(np.float32)
    logits = model.predict(x * np.float32(fnet.pixel_scale), batch_size=512, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def evaluate(fnet, model, train_images, test_images, test_labels, bits_list, *, act_bits=None,
             rounding="nearest", granularity="channel", calibration=CALIBRATION_IMAGES,
             progress=True, preset=None, spec=None, method="ptq", seed=0, layer_bits=()):
    """Return the results of :func:`main`.

    ``{"float_accuracy": f, "int": {"8": acc, ...}, "method": {"8": "QAT", ...}}``. With
    ``preset``, its accuracy is added under the preset's name (e.g. ``"x256"``). With
    ``spec`` (the model's name or file), each bit width is quantized by
    :func:`~sw.quantize.quantize_model` with ``method`` (any of
    :data:`~sw.quantize.METHOD_TABLE`; QAT where trained for ``auto``); without it, ``fnet``
    is quantized after training. ``seed`` seeds stochastic rounding; ``layer_bits``
    (mixed precision, :func:`~sw.quantize.parse_layer_bits`) overrides layers at every width.
    """
    results = {"float_accuracy": float_accuracy(fnet, model, test_images, test_labels),
               "int": {}, "method": {}}
    for bits in tqdm(bits_list, desc="bit widths", disable=not progress, file=sys.stderr):
        config = QuantConfig(weight_bits=bits, act_bits=act_bits, rounding=rounding,
                             granularity=granularity, seed=seed, layer_bits=layer_bits)
        if spec is None:
            qmodel = quantize(fnet, train_images[:calibration], config)
        else:
            qmodel, _ = quantize_model(spec, config, train_images[:calibration], method)
        classes, _ = classify(qmodel, test_images)
        results["int"][str(bits)] = float(np.mean(classes == test_labels))
        results["method"][str(bits)] = qmodel.config["method"]
    if preset:
        qmodel = quantize(fnet, train_images[:calibration], QuantConfig(preset=preset))
        classes, _ = classify(qmodel, test_images)
        results[preset] = float(np.mean(classes == test_labels))
    return results


def _plot(path, name, results):
    import matplotlib  # only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bits = sorted(int(b) for b in results["int"])
    figure, axes = plt.subplots(figsize=(5, 3.2), dpi=120)
    axes.plot(bits, [100 * results["int"][str(b)] for b in bits], "o-", label="integer golden")
    axes.axhline(100 * results["float_accuracy"], color="gray", linestyle="--", label="float")
    axes.set_xlabel("weight bits")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(f"{name}: accuracy vs bit width")
    axes.legend()
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", metadata={"Software": marker("sw.evaluate")})
    plt.close(figure)
    write_file(path, png.getvalue())


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sw.evaluate",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lenet5", help="seed name or .keras/.h5 file")
    parser.add_argument("--bits", default="8,4,2,1",
                        help="comma-separated widths, each of the weights and the activations")
    parser.add_argument("--act-bits", default=None,
                        help="activation bits for every width (default: each --bits)")
    parser.add_argument("--layer-bits", default=None, type=parse_layer_bits,
                        help="per-layer widths over every --bits, e.g. first=8,last=8 or "
                             "conv2d=8/4 (weights/activations; mixed precision)")
    parser.add_argument("--rounding", choices=ROUNDINGS, default="nearest")
    parser.add_argument("--granularity", choices=GRANULARITIES, default="channel")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="also evaluate a fixed scheme (x256: the seed's int(w*256))")
    parser.add_argument("--method", type=check_method, default="auto", help=METHOD_HELP)
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds stochastic rounding (--method randomized; default 0)")
    parser.add_argument("--data", default=None, help=parse_data_arg.__doc__)
    parser.add_argument("--images", type=int, default=None, help="test images (default all)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--plot", default=None, help="write a PNG plot here "
                        "(default: --json's path with .png)")
    parser.add_argument("--force", action="store_true",
                        help="replace --json/--plot files that sw.evaluate did not write")
    args = parser.parse_args(argv)
    plot = args.plot or (str(Path(args.json).with_suffix(".png")) if args.json else None)
    if args.json:
        prepare_file(args.json, "sw.evaluate", force=args.force, option="--json")
    if plot:
        prepare_file(plot, "sw.evaluate", force=args.force, option="--plot")
    bits_list = parse_bits(args.bits)
    act_bits = None if args.act_bits is None else check_bits(args.act_bits, "--act-bits")
    fnet = load_float_net(args.model)
    model = load_model(args.model)
    train_images, _ = load_train(args.data)
    test_images, test_labels = load_test(args.data)
    test_images = check_images(test_images, fnet.input_shape, fnet.name)
    if args.images is not None:
        if args.images < 1:
            raise UserError(f"--images must be positive, not {args.images}")
        test_images, test_labels = test_images[:args.images], test_labels[:args.images]
    results = evaluate(fnet, model, train_images, test_images, test_labels, bits_list,
                       act_bits=act_bits, rounding=args.rounding, granularity=args.granularity,
                       preset=args.preset, spec=args.model, method=args.method,
                       seed=args.seed, layer_bits=args.layer_bits or ())
    report = {"model": fnet.name, "test_images": len(test_images), **results}
    print(f"{fnet.name} on {len(test_images)} test images")
    print(f"{'bits':>6} {'accuracy':>9} {'vs float':>9}  method")
    print(f"{'float':>6} {100 * results['float_accuracy']:8.2f}%")
    for bits in bits_list:
        accuracy = results["int"][str(bits)]
        print(f"{bits:>6} {100 * accuracy:8.2f}% "
              f"{100 * (accuracy - results['float_accuracy']):+8.2f}  "
              f"{results['method'][str(bits)]}")
    if args.preset:
        accuracy = results[args.preset]
        print(f"{args.preset:>6} {100 * accuracy:8.2f}% "
              f"{100 * (accuracy - results['float_accuracy']):+8.2f}  post-training")
    if args.json:
        write_json(args.json, report, "sw.evaluate")
    if plot:
        _plot(plot, fnet.name, results)


if __name__ == "__main__":
    main()
