//! Typed client requests and server messages: parse and build, nothing else.
