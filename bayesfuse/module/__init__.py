"""Generative model: product-of-experts fusion, heads, and the Pyro model/guide (tensors in, tensors out)."""

from bayesfuse.module.batch import Batch, TensorStore
from bayesfuse.module.fusion import product_of_experts
from bayesfuse.module.fusion_module import FusionModule
from bayesfuse.module.head_factory import build_head_module
from bayesfuse.module.heads import CategoricalHeadModule, HeadModule

__all__ = ["Batch", "TensorStore", "product_of_experts", "FusionModule", "HeadModule",
           "CategoricalHeadModule", "build_head_module"]
