"""ReachRank Numba kernels: retrieval, similarity, filters and hashing shared by training and serving."""
