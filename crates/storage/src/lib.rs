//! latentdb storage
