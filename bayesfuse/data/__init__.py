"""Data layer: multimodal containers aligned by sample id, and train-fitted preprocessing."""

from bayesfuse.data.multimodal import MultiModalData
from bayesfuse.data.preprocessing import ModalityTransform, detect_likelihood

__all__ = ["MultiModalData", "ModalityTransform", "detect_likelihood"]
