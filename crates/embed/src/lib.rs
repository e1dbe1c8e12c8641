//! The built-in text embedder of latentdb.
