"""Where the project lives: the one place that knows the checkout's layout."""

from pathlib import Path

__all__ = ["MODELS_DIR", "ROOT", "SHARED_MNIST"]

#: The project folder (holding ``sw/``, ``hw/``, ``sim/``, ``models/``).
ROOT = Path(__file__).resolve().parent.parent
#: The seed and trained Keras models.
MODELS_DIR = ROOT / "models"
#: The real MNIST test set beside the project (``../shared/datasets/mnist``).
SHARED_MNIST = ROOT.parent / "shared" / "datasets" / "mnist"
