"""Using trained models: sentence embeddings and attention heat maps."""
