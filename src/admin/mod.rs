//! The ops tool (being written).
