//! The transports area: router capabilities, `createTransport`, `connectTransport`,
//! `restartIce`.

use std::convert::Infallible;

use dspeak_schema::TransportId;
use dspeak_schema::media::{
    ConnectTransportParams, CreateTransportParams, CreateTransportResult, Direction, TransportParams,
};
use dspeak_schema::ortc::{DtlsParameters, DtlsRole, IceParameters, RtpCapabilities};
use dspeak_schema::rooms::Empty;

use super::Session;
use crate::error::{CreateTransportError, NotFound, TransportError};
use crate::media::{expected_fingerprint, router};

impl Session {
    /// `getRouterRtpCapabilities`: the same for every room, so no join is needed.
    pub(crate) async fn router_rtp_capabilities(&mut self) -> Result<RtpCapabilities, Infallible> {
        Ok(router::capabilities())
    }

    /// `createTransport`.
    pub(crate) async fn create_transport(
        &mut self,
        p: CreateTransportParams,
    ) -> Result<CreateTransportResult, CreateTransportError> {
        let j = self.joined()?;
        match p.direction {
            Direction::Send if !j.grants.publish => return Err(CreateTransportError::NotGranted("canPublish")),
            Direction::Recv if !j.grants.subscribe => return Err(CreateTransportError::NotGranted("canSubscribe")),
            Direction::Send | Direction::Recv => {}
        }
        let max = self.shared.config.limits.max_transports;
        if j.transports.len() >= max {
            return Err(CreateTransportError::TooMany { max });
        }
        let id = TransportId::new(uuid::Uuid::new_v4().to_string());
        let (worker, owner, direction) = (j.worker.clone(), j.peer_id.clone(), p.direction);
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
    pub(crate) async fn connect_transport(&mut self, p: ConnectTransportParams) -> Result<Empty, TransportError> {
        let j = self.joined()?;
        self.own_transport(&p.transport_id)?;
        let expected = expected_fingerprint(&p.dtls_parameters.fingerprints)?;
        let (id, owner, role) = (p.transport_id, j.peer_id.clone(), p.dtls_parameters.role);
        j.worker.call(move |w| w.connect_transport(&id, &owner, expected, role)).await?;
        Ok(Empty {})
    }

    /// `restartIce`.
    pub(crate) async fn restart_ice(&mut self, p: TransportParams) -> Result<IceParameters, TransportError> {
        let j = self.joined()?;
        self.own_transport(&p.transport_id)?;
        let (id, owner) = (p.transport_id, j.peer_id.clone());
        Ok(j.worker.call(move |w| w.restart_ice(&id, &owner)).await?)
    }

    /// The direction of one of this session's transports.
    /// The session must be joined (checked first by every caller).
    pub(super) fn own_transport(&self, id: &TransportId) -> Result<Direction, NotFound> {
        let transports = self.joined.as_ref().map(|j| &j.transports);
        transports.and_then(|t| t.get(id)).copied().ok_or_else(|| NotFound::new("transport", id))
    }
}
