//! Integration tests: a real server on port 0, the typed jsonrpsee client from
//! `dspeak-schema`, and raw WebSocket clients for malformed input.

// Helpers are `pub` for the sibling modules of this one test binary.
#![allow(unreachable_pub)]

mod admin;
mod cluster;
mod connections;
mod deploy;
mod errors;
mod hostile;
mod ice_tcp;
mod media;
mod ops;
mod pymediasoup;
mod resume;
mod rooms;
mod security;
mod soak;
mod support;
mod voice;
mod web;
mod webhooks;
