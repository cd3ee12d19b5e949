//! Router and middleware. (Being written.)
