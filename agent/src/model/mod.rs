//! The model: raw samples per unit (latest and previous) and what is derived
//! from them (rates, growth slopes), plus host figures.

pub mod event;
pub mod growth;
pub mod rates;
pub mod sample;
pub mod serve;
pub mod state;
