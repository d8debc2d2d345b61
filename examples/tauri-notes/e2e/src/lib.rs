//! Nothing here: the end-to-end test is `tests/window.rs`.
