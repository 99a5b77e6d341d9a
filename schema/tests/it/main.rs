//! Integration tests of the contract crate: the committed exports in `schema/` match the
//! Rust contract (regenerate with `cargo xtask sdk` when they do not).

mod exports;
