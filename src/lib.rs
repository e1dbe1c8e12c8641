//! latentdb facade
