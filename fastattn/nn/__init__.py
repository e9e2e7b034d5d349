"""fastattn.nn: trainable modules with torch.nn's names, arguments and masks, on fastattn's kernels.

Each module is a forward/backward pair over NumPy arrays (no autograd): forward keeps what its
backward needs; backward(grad_output) adds into every Parameter's .grad and returns the gradient
with respect to the forward's inputs. state_dict() uses torch's parameter names, so weights move
between a fastattn.nn model and its torch.nn twin.

    from fastattn import nn
    layer = nn.TransformerEncoderLayer(64, 4, dim_feedforward=128, batch_first=True, seed=0)
    y = layer(x)                      # x (N, T, 64) float32
    dx = layer.backward(dy)           # param.grad += ...

Modules with parameters take dtype= (float32 by default, or float64) and seed= (an int, None for
fresh entropy, or a NumPy Generator, which composite modules share with their parts); modules
without parameters follow their input's dtype.

Masks are torch.nn's (True = NOT allowed / padding), the opposite polarity of the bool mask of
F.scaled_dot_product_attention (True = may attend), exactly as in PyTorch.
"""
from fastattn.nn.module import Module, Parameter
from fastattn.nn.linear import Linear
from fastattn.nn.embedding import Embedding
from fastattn.nn.normalization import LayerNorm, RMSNorm
from fastattn.nn.dropout import Dropout
from fastattn.nn.activation import GELU, ReLU, SiLU
from fastattn.nn.container import ModuleList, Sequential
from fastattn.nn.attention import MultiheadAttention
from fastattn.nn.transformer import (Transformer, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
                                     TransformerEncoderLayer)
from fastattn.nn.positional import PositionalEncoding
from fastattn.nn.rotary import RotaryEmbedding
from fastattn.nn.grouped_attention import GroupedQueryAttention
from fastattn.nn.loss import CrossEntropyLoss

__all__ = ["Module", "Parameter", "Linear", "Embedding", "LayerNorm", "RMSNorm", "Dropout", "ReLU", "GELU", "SiLU",
           "Sequential",
           "ModuleList", "MultiheadAttention", "TransformerEncoderLayer", "TransformerDecoderLayer",
           "TransformerEncoder", "TransformerDecoder", "Transformer", "PositionalEncoding", "RotaryEmbedding",
           "GroupedQueryAttention", "CrossEntropyLoss"]
