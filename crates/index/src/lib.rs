//! The vector index (HNSW) of latentdb.
