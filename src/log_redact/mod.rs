//! The one place that decides how anything sensitive (message text, passwords, key
//! material, raw packet bytes) appears in logs (DESIGN.md, promise 5).
//!
//! Being built: sensitive types with keyed fingerprints and the reloadable subscriber.
