//! The media engine's integration tests: a real [`dspeak_media::Engine`] on real UDP
//! ports, driven through its [`dspeak_media::RouterHandle`], with str0m client peers
//! (ICE controlling, DTLS client, SRTP) on their own UDP sockets (`peer`).

mod cross_workers;
mod peer;
