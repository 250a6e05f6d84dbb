//! Sinks: secondary outputs written before each commit of the store
//! (implementations of [`sluice_core::Sink`]).

pub mod items;

pub use items::{ItemsSink, ItemsSinkConfig};
