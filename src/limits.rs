//! Numbers the old clients impose on every layer above them, written once: the protocol
//! cuts speech to them, the world's ESP dialogue and the vault's text limit follow them,
//! and the config refuses values past them.
//!
//! May touch: nothing (constants).

/// Most text bytes in one speech balloon, OBJECT_TALKS line or prompt: the C64 client's
/// balloon (NeoHabitat's bridge uses the same 114), before Habitat escaping.
pub const SPEECH_CAP: usize = 114;
