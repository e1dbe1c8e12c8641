//! latentdb's gRPC service.
