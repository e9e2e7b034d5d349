"""Models built on fastattn's kernels: the GPT (nanoGPT's layout) and the BERT encoder."""
from fastattn.models.bert import BertConfig, Encoder
from fastattn.models.gpt import GPT
from fastattn.models.gpt_config import GPTConfig

__all__ = ["GPT", "GPTConfig", "BertConfig", "Encoder"]
