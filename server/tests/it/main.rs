//! Integration tests: a real server on port 0, the typed jsonrpsee client from
//! `dspeak-schema`, and raw WebSocket clients for malformed input.

mod errors;
mod media;
mod pymediasoup;
mod rooms;
mod support;
