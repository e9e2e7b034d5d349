"""Models built on fastattn's kernels: the GPT (nanoGPT's layout), the BERT encoder and the
encoder-decoder Transformer (Seq2SeqTransformer)."""
from fastattn.models.bert import BertConfig, Encoder
from fastattn.models.gpt import GPT
from fastattn.models.gpt_config import GPTConfig
from fastattn.models.seq2seq import Seq2SeqTransformer

__all__ = ["GPT", "GPTConfig", "BertConfig", "Encoder", "Seq2SeqTransformer"]
