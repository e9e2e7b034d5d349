"""fastattn: attention, softmax, layer norm and GELU kernels for the CPU, compiled and in NumPy;
trainable modules with torch.nn's names on them (fastattn.nn); a GPT trained and sampled on them
(fastattn.train, `fastattn train` / `fastattn sample`, data parallel under mpiexec), the
encoder-decoder Transformer of the paper (fastattn.Seq2SeqTransformer, `fastattn train-seq2seq` /
`fastattn translate`), and BERT-family sentence embeddings (fastattn.embed, `fastattn embed`,
also on a Dask cluster).

    import fastattn
    from fastattn import functional as F
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    with fastattn.use_backend("reference"):
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
"""
from fastattn import functional
from fastattn._backend import available_backends, get_backend, set_backend, use_backend
from fastattn._build_info import build_info
from fastattn._threads import get_num_threads, set_num_threads
from fastattn.io.tokenizer import CharTokenizer, PretrainedTokenizer, load_tokenizer
from fastattn.optim import AdamW, clip_grad_norm_
from fastattn.models import GPT, BertConfig, Encoder, GPTConfig, Llama, LlamaConfig, Seq2SeqTransformer, from_pretrained
from fastattn.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fastattn.training.trainer import TrainConfig, train
from fastattn.inference.embeddings import SentenceEncoder, embed
from fastattn import datasets, nn

__version__ = "0.1.0"

__all__ = [
    "functional",
    "nn",
    "datasets",
    "available_backends",
    "get_backend",
    "set_backend",
    "use_backend",
    "build_info",
    "get_num_threads",
    "set_num_threads",
    "GPT",
    "GPTConfig",
    "Llama",
    "LlamaConfig",
    "from_pretrained",
    "AdamW",
    "clip_grad_norm_",
    "CharTokenizer",
    "PretrainedTokenizer",
    "load_tokenizer",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "TrainConfig",
    "train",
    "BertConfig",
    "Encoder",
    "Seq2SeqTransformer",
    "SentenceEncoder",
    "embed",
]
