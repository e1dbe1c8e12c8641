//! Integration tests of the storage engine (one binary; one module per concern).

mod change_log;
mod chunks;
mod data_loss;
mod model;
mod model_switch;
mod overlap;
mod races;
mod records;
mod settings;
mod snapshot;
