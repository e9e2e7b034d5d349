"""Models built on fastattn's kernels: the GPT (nanoGPT's layout), the Llama family (Llama, Qwen2,
Mistral), the BERT encoder and the encoder-decoder Transformer (Seq2SeqTransformer)."""
from fastattn.models.bert import BertConfig, Encoder
from fastattn.models.gpt import GPT
from fastattn.models.gpt_config import GPTConfig
from fastattn.models.llama import Llama
from fastattn.models.llama_config import LlamaConfig
from fastattn.models.pretrained import from_pretrained
from fastattn.models.seq2seq import Seq2SeqTransformer

__all__ = ["GPT", "GPTConfig", "Llama", "LlamaConfig", "from_pretrained", "BertConfig", "Encoder", "Seq2SeqTransformer"]
