"""Named model sizes: --preset small|default|large of `fastattn train` and `fastattn train-seq2seq`.

    GPTConfig.preset("small", vocab_size=65)              # a GPTConfig of that size
    Seq2SeqTrainConfig.preset("large", max_iters=100)     # (fastattn.training.seq2seq_trainer)

A preset is a few settings (the model's shape, its context and its dropout); every other setting
keeps its default, and any setting given explicitly (a flag, a --config file, a keyword) wins over
the preset's. "default" is the defaults themselves.
"""

PRESETS = ("small", "default", "large")

# GPT (fastattn train): default is nanoGPT's CPU run of Tiny Shakespeare, large nanoGPT's own
# shakespeare-char model (its GPU config's shape).
GPT_PRESETS = {
    "small": dict(n_layer=2, n_head=2, n_embd=64, block_size=32, dropout=0.0),
    "default": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0),
    "large": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2),
}

# Seq2SeqTransformer (fastattn train-seq2seq): default and large are the paper's base and big models.
SEQ2SEQ_PRESETS = {
    "small": dict(d_model=128, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=512,
                  dropout=0.1),
    "default": dict(d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048,
                    dropout=0.1),
    "large": dict(d_model=1024, nhead=16, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=4096,
                  dropout=0.3),
}


def preset_settings(table, name):
    """A copy of table[name] (table: GPT_PRESETS or SEQ2SEQ_PRESETS); ValueError for an unknown name."""
    if name not in table:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}")
    return dict(table[name])
