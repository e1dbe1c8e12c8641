//! The cluster's integration tests, against real servers on loopback (see `harness`).

mod embedded;
mod faults;
mod harness;
mod sharded;
