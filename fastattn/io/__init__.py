"""Files: Hugging Face model directories and tokenizers. Knows file formats, not models."""
