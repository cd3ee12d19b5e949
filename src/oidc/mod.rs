//! Protocol. (Being written.)
