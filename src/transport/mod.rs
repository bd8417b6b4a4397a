//! The transport: everything about the wire between the router and its
//! clients and workers that knows nothing of routing.

pub mod idle;
