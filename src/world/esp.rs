//! ESP routing and the ESP Mail offer (ESPMAIL.md §3, WIRE.md §4.4). Being built.
