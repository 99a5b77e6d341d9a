//! A DTLS provider for the synthetic clients: str0m's aws-lc-rs provider builds and
//! self-validates a new dimpl configuration for every `Rtc` (a few ECDH and ECDSA
//! operations). A browser pays nothing like it per connection, and hundreds of
//! synthetic clients on one load-client core would, so this one builds the instances
//! from one shared configuration (the same settings: no server cookie).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use str0m::config::{CryptoProvider, DtlsCert, DtlsVersion};
use str0m::crypto::CryptoError;
use str0m::crypto::dtls::{DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, ProtocolVersion};

/// str0m's crypto with [`SharedConfigDtls`] for DTLS.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    let base = str0m::crypto::from_feature_flags();
    // One provider for the process: str0m's field is a `&'static dyn DtlsProvider`.
    let dtls: &'static SharedConfigDtls =
        Box::leak(Box::new(SharedConfigDtls { inner: base.dtls_provider, configs: Mutex::new(Vec::new()) }));
    Arc::new(CryptoProvider { dtls_provider: dtls, ..base })
}

#[derive(Debug)]
struct SharedConfigDtls {
    inner: &'static dyn DtlsProvider,
    configs: Mutex<Vec<(Option<usize>, Arc<dimpl::Config>)>>,
}

impl DtlsProvider for SharedConfigDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.inner.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = {
            let mut configs = self.configs.lock().unwrap_or_else(|e| e.into_inner());
            match configs.iter().find(|(m, _)| *m == mtu) {
                Some((_, c)) => c.clone(),
                None => {
                    let mut builder = dimpl::Config::builder().use_server_cookie(false);
                    if let Some(mtu) = mtu {
                        builder = builder.mtu(mtu);
                    }
                    let c = Arc::new(builder.build().map_err(|e| CryptoError::Other(format!("dimpl config: {e}")))?);
                    configs.push((mtu, c.clone()));
                    c
                }
            }
        };
        let cert =
            dimpl::DtlsCertificate { certificate: cert.certificate.clone(), private_key: cert.private_key.clone() };
        let dtls = match version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => return Err(CryptoError::Other(format!("unsupported DTLS version: {other}"))),
        };
        Ok(Box::new(Instance(dtls)))
    }
}

struct Instance(dimpl::Dtls);

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").finish_non_exhaustive()
    }
}

impl DtlsInstance for Instance {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active)
    }
    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }
    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.0.poll_output(buf)
    }
    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }
    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }
    fn is_active(&self) -> bool {
        self.0.is_active()
    }
    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }
    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}
