//! The transports area: router capabilities, `createTransport`, `connectTransport`,
//! `restartIce`.

use dspeak_schema::TransportId;
use dspeak_schema::media::{
    ConnectTransportParams, CreateTransportParams, CreateTransportResult, Direction, TransportParams,
};
use dspeak_schema::ortc::{DtlsParameters, DtlsRole, IceParameters, RtpCapabilities};
use dspeak_schema::rooms::Empty;

use super::Session;
use crate::error::Error;
use crate::media::{expected_fingerprint, router};

impl Session {
    /// `getRouterRtpCapabilities`: the same for every room, so no join is needed.
    pub(crate) async fn router_rtp_capabilities(&mut self) -> Result<RtpCapabilities, Error> {
        Ok(router::capabilities())
    }

    /// `createTransport`.
    pub(crate) async fn create_transport(&mut self, p: CreateTransportParams) -> Result<CreateTransportResult, Error> {
        let j = self.joined()?;
        let max = self.shared.config.limits.max_transports;
        if j.transports.len() >= max {
            return Err(Error::LimitExceeded(format!("a session may hold at most {max} transports")));
        }
        let id = TransportId::new(uuid::Uuid::new_v4().to_string());
        let (worker, owner, direction) = (j.room.worker().clone(), j.peer_id.clone(), p.direction);
        let ice_id = id.clone();
        let ice = worker.call(move |w| w.create_transport(ice_id, owner, direction)).await?;
        self.joined_mut()?.transports.insert(id.clone(), p.direction);
        tracing::debug!(transport = %id, direction = ?p.direction, "transport created");
        Ok(CreateTransportResult {
            id,
            ice_parameters: ice,
            ice_candidates: self.shared.engine.candidates(&worker),
            dtls_parameters: DtlsParameters { role: DtlsRole::Auto, fingerprints: self.shared.engine.fingerprints() },
        })
    }

    /// `connectTransport`.
    pub(crate) async fn connect_transport(&mut self, p: ConnectTransportParams) -> Result<Empty, Error> {
        let j = self.joined()?;
        self.own_transport(&p.transport_id)?;
        let expected = expected_fingerprint(&p.dtls_parameters.fingerprints)?;
        let (id, owner, role) = (p.transport_id, j.peer_id.clone(), p.dtls_parameters.role);
        j.room.worker().call(move |w| w.connect_transport(&id, &owner, expected, role)).await?;
        Ok(Empty {})
    }

    /// `restartIce`.
    pub(crate) async fn restart_ice(&mut self, p: TransportParams) -> Result<IceParameters, Error> {
        let j = self.joined()?;
        self.own_transport(&p.transport_id)?;
        let (id, owner) = (p.transport_id, j.peer_id.clone());
        j.room.worker().call(move |w| w.restart_ice(&id, &owner)).await
    }

    /// The direction of one of this session's transports.
    pub(super) fn own_transport(&self, id: &TransportId) -> Result<Direction, Error> {
        self.joined()?.transports.get(id).copied().ok_or_else(|| Error::not_found("transport", id))
    }
}
