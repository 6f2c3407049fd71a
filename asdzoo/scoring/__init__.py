"""Memory banks (faiss), kNN backends, score normalisers and fusion."""
