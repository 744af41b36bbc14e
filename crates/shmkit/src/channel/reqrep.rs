//! Request/response: a named service, many clients.
//!
//! (Being written.)
