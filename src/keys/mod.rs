//! Signing keys. (Being written.)
