//! The small vocabulary every latentdb crate shares, so that it is defined once: the
//! [`ErrorKind`] each crate's error reports, the similarity [`Metric`], and the checksummed
//! files ([`dump`]) the vector and lexical indexes persist themselves in.
//!
//! Storage, index and embedder stay leaves that never depend on each other; they all depend on
//! this crate, which depends on nothing of latentdb's.
//!
//! ```
//! use latentdb_types::{ErrorKind, Metric};
//! let m: Metric = "Euclidean".parse().unwrap();
//! assert_eq!(m, Metric::L2);
//! assert!(ErrorKind::InvalidArgument.is_caller_fault());
//! assert!(!ErrorKind::Internal.is_caller_fault());
//! ```

pub mod dump;
mod echo;
mod error_kind;
mod metric;

pub use echo::truncate_echo;
pub use error_kind::ErrorKind;
pub use metric::{Metric, UnknownMetric};
