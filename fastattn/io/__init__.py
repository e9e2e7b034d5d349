"""Files: Hugging Face model directories, tokenizers, token datasets (train.bin / val.bin). Knows file formats, not models."""
