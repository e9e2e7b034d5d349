"""The PyTorch twin of fastattn.Seq2SeqTransformer: torch.nn.Transformer (batch first) between
the same embeddings (x sqrt(d_model) + the paper's sinusoids) and output layer, with the same
parameter names, so that fastattn's state_dict() loads into it. Used by
benchmarks/date_normalisation.py and tests/test_seq2seq.py.

    twin = torch_twin(model, dtype=torch.float64)   # dropout 0, model's weights copied
"""
import math

import torch


class TorchSeq2Seq(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        c = self.config = config
        E, pad = c["d_model"], c["pad_idx"]
        self.src_tok_emb = torch.nn.Embedding(c["src_vocab_size"], E, padding_idx=pad)
        self.tgt_tok_emb = torch.nn.Embedding(c["tgt_vocab_size"], E, padding_idx=pad)
        self.transformer = torch.nn.Transformer(E, c["nhead"], c["num_encoder_layers"], c["num_decoder_layers"],
                                                c["dim_feedforward"], 0.0, c["activation"], batch_first=True,
                                                norm_first=c["norm_first"])
        self.generator = torch.nn.Linear(E, c["tgt_vocab_size"])
        if c["share_embeddings"]:
            self.tgt_tok_emb.weight = self.src_tok_emb.weight
            self.generator.weight = self.src_tok_emb.weight
        pos = torch.arange(c["max_len"], dtype=torch.float64)[:, None]
        div = torch.exp(torch.arange(0, E, 2, dtype=torch.float64) * (-math.log(10000.0) / E))
        pe = torch.zeros(c["max_len"], E, dtype=torch.float64)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div[: E // 2])
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, src, tgt):  # (N, S), (N, T) int64 -> logits (N, T, V)
        scale, pad = math.sqrt(self.config["d_model"]), self.config["pad_idx"]
        s = self.src_tok_emb(src) * scale + self.pe[: src.shape[1]].to(self.generator.weight.dtype)
        t = self.tgt_tok_emb(tgt) * scale + self.pe[: tgt.shape[1]].to(self.generator.weight.dtype)
        causal = torch.ones(tgt.shape[1], tgt.shape[1], dtype=torch.bool).triu(1)  # True: not allowed
        y = self.transformer(s, t, tgt_mask=causal, src_key_padding_mask=src == pad,
                             tgt_key_padding_mask=tgt == pad, memory_key_padding_mask=src == pad)
        return self.generator(y)


def torch_twin(model, dtype=torch.float32):
    """A TorchSeq2Seq with model's weights (dropout 0)."""
    twin = TorchSeq2Seq(model.config).to(dtype)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()}, strict=False)
    own = dict(model.named_parameters())
    assert [n for n, _ in twin.named_parameters()] == list(own), "the twin's parameters are not the model's"
    return twin
