"""The seed architectures, and loading a model by seed name or file."""

from pathlib import Path

from .errors import UserError
from .keras_import import extract, load_keras_model
from .paths import MODELS_DIR

__all__ = ["MODELS_DIR", "SEED_MODELS", "build", "load_float_net", "load_model", "model_path"]


def _lenet5(keras):
    layers = keras.layers
    return [layers.Conv2D(6, 5, activation="relu"), layers.MaxPooling2D(2),
            layers.Conv2D(16, 5, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(),
            layers.Dense(120, activation="relu"), layers.Dense(84, activation="relu"),
            layers.Dense(10)]


def _tiny_cnn(keras):
    layers = keras.layers
    return [layers.Conv2D(4, 5, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(),
            layers.Dense(10)]


def _mlp(keras):
    return [keras.layers.Flatten(), keras.layers.Dense(10)]


def _mlp64(keras):
    layers = keras.layers
    return [layers.Flatten(), layers.Dense(64, activation="relu"), layers.Dense(10)]


#: Seed architectures: 28x28x1 input, valid padding, stride 1, linear logits.
SEED_MODELS = {"lenet5": _lenet5, "tiny_cnn": _tiny_cnn, "mlp": _mlp, "mlp64": _mlp64}


def build(name):
    """Build an untrained seed model (a ``keras.Sequential``) by name."""
    if name not in SEED_MODELS:
        raise UserError(f"unknown model {name!r}; seed models: {', '.join(SEED_MODELS)}, "
                        f"or a .keras/.h5 file")
    import keras

    return keras.Sequential([keras.Input((28, 28, 1)), *SEED_MODELS[name](keras)], name=name)


def model_path(spec):
    """The file for a seed model name (the shipped pretrained one) or a path."""
    if spec in SEED_MODELS:
        return MODELS_DIR / f"{spec}.keras"
    if not spec.endswith((".keras", ".h5", ".hdf5")):
        raise UserError(f"unknown model {spec!r}; seed models: {', '.join(SEED_MODELS)}, "
                        f"or a .keras/.h5 file")
    return Path(spec)


def load_model(spec):
    """Load a trained Keras model by seed name or path."""
    return load_keras_model(model_path(spec))


def load_float_net(spec):
    """Load a model and map it to a :class:`~sw.keras_import.FloatNet`."""
    name = spec if spec in SEED_MODELS else Path(spec).stem
    return extract(load_model(spec), name=name)
