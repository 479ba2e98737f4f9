"""PyTorch models: CTR rankers and retrieval embeddings. Training loops live in training.fit."""
