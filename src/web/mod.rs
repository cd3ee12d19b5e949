//! HTML pages. (Being written.)
