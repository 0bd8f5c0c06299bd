"""Reading Keras models: seeds, user-style models saved as .keras and .h5, and clear errors."""

import zipfile

import numpy as np
import pytest

from sw.errors import UserError
from sw.keras_import import SUPPORTED_LAYERS, extract, load_keras_model
from sw.models import SEED_MODELS, build, load_float_net, model_path
from tests.keras_models import randomize_batch_norm


def _keras_logits(model, fnet, images):
    x = images.reshape(-1, *model.input_shape[1:]).astype("float32") * fnet.pixel_scale
    return model.predict(x, verbose=0)


@pytest.mark.parametrize("name", sorted(SEED_MODELS))
def test_shipped_seed_models_load_and_match_keras(name, mnist_test):
    fnet = load_float_net(name)
    model = load_keras_model(model_path(name))
    images = mnist_test[0][:64]
    ours = fnet.forward(images)[-1]
    np.testing.assert_allclose(ours, _keras_logits(model, fnet, images), rtol=1e-4, atol=1e-4)


def test_seed_architectures_are_exact():
    lenet = build("lenet5")
    kinds = [(type(layer).__name__, getattr(layer, "filters", getattr(layer, "units", None)))
             for layer in lenet.layers]
    assert kinds == [("Conv2D", 6), ("MaxPooling2D", None), ("Conv2D", 16),
                     ("MaxPooling2D", None), ("Flatten", None), ("Dense", 120),
                     ("Dense", 84), ("Dense", 10)]
    assert lenet.count_params() == 44426  # 44,190 weights + 236 biases
    assert build("tiny_cnn").count_params() == 5860 + 4 + 10
    assert build("mlp64").count_params() == 784 * 64 + 64 * 10 + 74


def _user_model(keras):
    """What a tutorial user builds: preprocessing, BN, same padding, strides, dropout."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(5, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(6, 4, strides=2, activation="relu")(x)
    x = keras.layers.SpatialDropout2D(0.1)(x)
    x = keras.layers.Reshape((-1,))(x)
    x = keras.layers.Dense(12)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs, name="user_cnn")
    return randomize_batch_norm(model)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_user_model_files_fold_to_the_same_function(suffix, tmp_path, mnist_test):
    import keras

    model = _user_model(keras)
    path = tmp_path / f"user{suffix}"
    model.save(path)
    loaded = load_keras_model(path)
    fnet = extract(loaded)
    assert fnet.pixel_scale == 1.0  # the model rescales its own input
    assert any("softmax" in note for note in fnet.notes)
    assert [type(layer).__name__ for layer in fnet.layers] == [
        "FloatConv2D", "FloatMaxPool2D", "FloatConv2D", "FloatFlatten", "FloatDense",
        "FloatDense"]
    images = mnist_test[0][:32]
    logits = fnet.forward(images)[-1]
    probabilities = loaded.predict(images[..., None].astype("float32"), verbose=0)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(shifted / shifted.sum(axis=1, keepdims=True), probabilities,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("layer", "message"), [
    ("tanh", r"activation 'tanh' is not supported"),
    ("leaky", r"layer 'bad' \(LeakyReLU\) is not supported; supported layers: Conv2D"),
    ("upsample", r"layer 'bad' \(UpSampling2D\) is not supported"),
])
def test_unsupported_layers_are_named(layer, message):
    import keras

    body = {
        "tanh": [keras.layers.Flatten(), keras.layers.Dense(8, activation="tanh", name="bad")],
        "leaky": [keras.layers.Conv2D(2, 3), keras.layers.LeakyReLU(name="bad"),
                  keras.layers.Flatten()],
        "upsample": [keras.layers.UpSampling2D(2, name="bad"), keras.layers.Flatten()],
    }[layer]
    model = keras.Sequential([keras.Input((28, 28, 1)), *body, keras.layers.Dense(10)])
    with pytest.raises(UserError, match=message):
        extract(model)


def _refusal(keras, shape, *body):
    """The one-line error of importing ``Input(shape) -> body -> Dense(10)``."""
    model = keras.Sequential([keras.Input(shape), *body, keras.layers.Dense(10, name="out")])
    with pytest.raises(UserError) as refused:
        extract(model)
    return str(refused.value)


def test_lstm_is_named_where_the_importer_reaches_it():
    import keras

    layers = keras.layers
    unsupported = f"is not supported; supported layers: {SUPPORTED_LAYERS}"
    # A sequence input straight into the LSTM.
    assert _refusal(keras, (28, 28), layers.LSTM(4, name="lstm")) == \
        f"layer 'lstm' (LSTM) {unsupported}"
    # Convolution features reshaped to (timesteps, features), then the LSTM.
    assert _refusal(keras, (28, 28, 1), layers.Conv2D(2, 3, name="conv"),
                    layers.Reshape((26, 52), name="seq"), layers.Dropout(0.1),
                    layers.LSTM(4, name="lstm")) == \
        ("layer 'lstm' (LSTM) is not supported (Reshape 'seq' to (26, 52) feeds it); "
         f"supported layers: {SUPPORTED_LAYERS}")


def test_reshape_to_a_matrix_is_named_when_it_feeds_a_supported_layer():
    import keras

    layers = keras.layers
    unsupported = f"is not supported; supported layers: {SUPPORTED_LAYERS}"
    assert _refusal(keras, (28, 28, 1), layers.Reshape((28, 28), name="seq")) == \
        f"layer 'seq' (Reshape) {unsupported}"
    assert _refusal(keras, (28, 28, 1), layers.Reshape((28, 28), name="seq"),
                    layers.Reshape((784,), name="flat")) == f"layer 'seq' (Reshape) {unsupported}"


def test_branching_models_are_refused():
    import keras

    inputs = keras.Input((28, 28, 1))
    a = keras.layers.Conv2D(2, 3, padding="same")(inputs)
    b = keras.layers.Conv2D(2, 3, padding="same")(inputs)
    x = keras.layers.Flatten()(keras.layers.Add()([a, b]))
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    with pytest.raises(UserError, match="only single-chain models are supported"):
        extract(model)


def test_bad_model_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_keras_model(tmp_path / "missing.keras")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(UserError, match=r"is not a Keras archive \(a \.keras file is a zip"):
        load_keras_model(bad)
    not_keras = tmp_path / "other.keras"  # a zip, but no Keras model inside: Keras says why
    with zipfile.ZipFile(not_keras, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(UserError, match="cannot load model"):
        load_keras_model(not_keras)
    with pytest.raises(UserError, match="unknown model 'resnet'"):
        model_path("resnet")
