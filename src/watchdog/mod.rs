//! The watchdog beside every Redis instance (being written).
