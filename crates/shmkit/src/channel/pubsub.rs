//! Publish/subscribe: one publisher, many subscribers, zero-copy.
//!
//! (Being written.)
