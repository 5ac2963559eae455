//! Codec throughput (filled in with the codec).
#![allow(missing_docs)]
fn main() {}
