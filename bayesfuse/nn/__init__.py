"""Neural building blocks: per-modality encoders (Gaussian experts) and decoders."""

from bayesfuse.nn.decoders import Decoder, decoder_log_likelihood
from bayesfuse.nn.encoders import GaussianExpertEncoder, mlp

__all__ = ["GaussianExpertEncoder", "Decoder", "decoder_log_likelihood", "mlp"]
