//! Integration tests of the storage engine (one binary; one module per concern).

mod chunks;
mod data_loss;
mod model;
mod races;
mod records;
