//! latentdb's gRPC service. The tonic server over the `latentdb` facade lands with the gRPC issue;
//! this crate is the seam it fills.
