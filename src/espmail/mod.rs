//! ESP Mail: what is stored for an offline avatar, how it is encrypted, and how it is
//! delivered once and then deleted for good (DESIGN.md, promises 1–4 and 7).

pub mod crypto;
pub mod keyfile;
