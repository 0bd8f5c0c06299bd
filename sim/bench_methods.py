"""The results page's comparison of the quantization methods: every method at every width,
and the mixed-precision networks, on the whole test set (golden model), for :mod:`sim.bench`.

The methods are ``docs/quantization.md``'s, as ``--method`` selects them: ``ptq``,
``dynamic-fp``, ``randomized`` once after training (post-training stochastic rounding,
seeded) and trained (``sw.train --method randomized``), ``iterative`` and ``dual-copy``
(QAT). A trained method's cell is empty where no model was trained for it (the page says how
to train one); nothing here trains.
"""

import hashlib

import numpy as np

from sw.golden import classify
from sw.models import model_path
from sw.quantize import QuantConfig, parse_layer_bits, quantize_model, train_command
from sw.trained import sidecar_path, trained_model_path

__all__ = ["COLUMNS", "COMPARE_BITS", "MIXED", "best_methods", "measure_method",
           "method_key", "methods_section", "mixed_key", "plot_methods"]

#: Bit widths of the comparison (weights = activations).
COMPARE_BITS = (1, 2, 3, 4, 6, 8)
#: The columns: ``(label, --method, rounding, trained method whose model it needs)``.
COLUMNS = (("ptq", "ptq", "nearest", None),
           ("dynamic-fp", "dynamic-fp", "nearest", None),
           ("randomized, post-training", "ptq", "stochastic", None),
           ("randomized, trained", "randomized", "nearest", "randomized"),
           ("iterative", "iterative", "nearest", "iterative"),
           ("dual-copy (QAT)", "dual-copy", "nearest", "dual-copy"))
#: The mixed-precision rows: ``(model, bits, --layer-bits)``, binary hidden layers with wider
#: ends as FINN keeps them (tiny_cnn has no hidden weight layer: its first is widened).
MIXED = (("lenet5", 1, "first=8,last=8"), ("lenet5", 1, "first=8/1,last=8"),
         ("tiny_cnn", 1, "first=8/1"))


def _trained_path(model, bits, trained, layer_bits=()):
    return trained_model_path(model, bits, bits, trained, layer_bits=layer_bits)


def method_key(model, bits, column, layer_bits=()):
    """A hash of the files a cell's accuracy depends on: the float model and, for a trained
    method, its trained model and fractions."""
    _, _, _, trained = next(c for c in COLUMNS if c[0] == column)
    digest = hashlib.sha256(model_path(model).read_bytes())
    if trained is not None:
        path = _trained_path(model, bits, trained, layer_bits)
        for part in (path, sidecar_path(path)):
            digest.update(part.read_bytes() if part.is_file() else b"missing")
    return digest.hexdigest()[:12]


def mixed_key(model, bits, spec, column):
    """:func:`method_key` of a mixed-precision row."""
    return method_key(model, bits, column, parse_layer_bits(spec))


def measure_method(model, bits, column, calibration, images, labels, layer_bits=()):
    """The golden model's accuracy of ``model`` at ``bits`` quantized by ``column``'s method.

    Returns
    -------
    dict
        ``accuracy`` and ``method`` (how the model was made), or ``missing`` (the command that
        trains the model a trained method needs).
    """
    _, method, rounding, trained = next(c for c in COLUMNS if c[0] == column)
    config = QuantConfig(weight_bits=bits, rounding=rounding, layer_bits=layer_bits)
    if trained is not None and not sidecar_path(_trained_path(model, bits, trained,
                                                              layer_bits)).is_file():
        return {"missing": train_command(model, config, trained)}
    qmodel, used = quantize_model(model, config, calibration, method)
    classes, _ = classify(qmodel, images.reshape(len(images), *qmodel.input_shape))
    return {"accuracy": float(np.mean(classes == labels)), "method": used,
            "images": len(images)}


def best_methods(results, models):
    """``{bits: [(column, mean accuracy over models)]}``: for each width the columns whose
    accuracy, averaged over ``models`` measured in every one, is the highest."""
    best = {}
    for bits in COMPARE_BITS:
        means = {}
        for column, *_ in COLUMNS:
            cells = [results.get(f"method/{model}/{bits}/{column}") for model in models]
            if cells and all(cell and "accuracy" in cell for cell in cells):
                means[column] = sum(cell["accuracy"] for cell in cells) / len(cells)
        if means:
            top = max(means.values())
            best[bits] = [(column, top) for column, mean in means.items() if mean == top]
    return best


def _cell(entry, best):
    if entry is None:
        return "–"
    if "missing" in entry:
        return "not trained"
    text = f"{100 * entry['accuracy']:.2f}"
    return f"**{text}**" if best else text


def methods_section(results, models, floats):
    """The comparison section: a table per model (bits x method, each row's best in bold),
    the best method per width over all models, and the mixed-precision rows."""
    if not any(key.startswith("method/") for key in results):
        return []
    lines = ["## Quantization methods compared", "",
             "The golden model's accuracy (%) on the 10,000 test images at W = A bits, by "
             "`--method` (`docs/quantization.md`): `ptq` (least squared error, nearest), "
             "`dynamic-fp` (power-of-two exponents by range), `randomized` once after "
             "training (stochastic rounding, seed 0) and trained with it (`sw.train --method "
             "randomized`, 40 epochs), `iterative` (`sw.train --method iterative`, 40 epochs) "
             "and `dual-copy` (the shipped QAT models, `sw.train --qat`, 40 epochs); each "
             "calibrated and trained on the same 5,000 training images, one seed each. "
             "\"not trained\": no model of that method at that width in `models/`.", ""]
    for model in models:
        float_ = floats.get(model)
        lines += [f"**{model}** (float {100 * float_['accuracy']:.2f}%)" if float_ else
                  f"**{model}**", "",
                  "| bits | " + " | ".join(column for column, *_ in COLUMNS) + " |",
                  "|---|" + "---|" * len(COLUMNS)]
        for bits in COMPARE_BITS:
            cells = [results.get(f"method/{model}/{bits}/{column}") for column, *_ in COLUMNS]
            top = max((c["accuracy"] for c in cells if c and "accuracy" in c), default=None)
            lines.append(f"| {bits} | " + " | ".join(
                _cell(c, c is not None and c.get("accuracy") == top) for c in cells) + " |")
        lines.append("")
    best = best_methods(results, models)
    if best:
        lines += ["Best over " + " and ".join(models) + " (mean accuracy) by width: "
                  + "; ".join(f"W{bits}A{bits} {', '.join(column for column, _ in winners)} "
                              f"({100 * winners[0][1]:.2f}%)" for bits, winners in best.items())
                  + ". `--method auto` (the default) takes the shipped dual-copy model where "
                  "there is one, else `ptq`.", ""]
    mixed = [(model, bits, spec) for model, bits, spec in MIXED if model in models]
    rows = []
    for model, bits, spec in mixed:
        cells = [results.get(f"mixed/{model}/{bits}/{spec}/{column}")
                 for column in ("ptq", "dual-copy (QAT)")]
        if any(cells):
            rows.append(f"| {model} | W{bits}A{bits} | `{spec}` | "
                        + " | ".join(_cell(cell, False) for cell in cells) + " |")
    if rows:
        lines += ["Mixed precision (`--layer-bits`; trained: `sw.train --qat --bits 1 "
                  "--layer-bits ...`):", "",
                  "| model | network | `--layer-bits` | ptq | dual-copy (QAT) |",
                  "|---|---|---|---|---|", *rows, ""]
    return lines


def plot_methods(results, models, floats, path):
    """Accuracy against bits, one line per method, one panel per model, into ``path``."""
    import matplotlib  # only the plots need it

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for axis, model in zip(axes[0], models, strict=True):
        if floats.get(model):
            axis.axhline(100 * floats[model]["accuracy"], color="gray", linestyle="--",
                         label="float")
        for column, *_ in COLUMNS:
            points = [(bits, results.get(f"method/{model}/{bits}/{column}"))
                      for bits in COMPARE_BITS]
            points = [(bits, 100 * e["accuracy"]) for bits, e in points
                      if e and "accuracy" in e]
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", label=column)
        axis.set(title=model, xlabel="bits (weights = activations)", ylabel="accuracy (%)",
                 xticks=COMPARE_BITS, ylim=(0, 100))
        axis.legend(fontsize="small")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
