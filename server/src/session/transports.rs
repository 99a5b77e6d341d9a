//! The transports area: router capabilities, `createTransport`, `connectTransport`,
//! `restartIce`.

use std::convert::Infallible;

use dspeak_schema::TransportId;
use dspeak_schema::media::{
    ConnectTransportParams, CreateTransportParams, CreateTransportResult, Direction, TransportParams,
};
use dspeak_schema::ortc::{IceParameters, RtpCapabilities};
use dspeak_schema::rooms::Empty;

use super::Session;
use crate::error::{CreateTransportError, NotFound, TransportError};
use dspeak_media::router;

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
        let created = j.router.create_transport(id.clone(), j.peer_id.clone(), p.direction).await?;
        self.joined_mut()?.transports.insert(id.clone(), p.direction);
        tracing::debug!(transport = %id, direction = ?p.direction, "transport created");
        Ok(created)
    }

    /// `connectTransport`.
    pub(crate) async fn connect_transport(&mut self, p: ConnectTransportParams) -> Result<Empty, TransportError> {
        let j = self.joined()?;
        self.own_transport(&p.transport_id)?;
        j.router.connect(p.transport_id, j.peer_id.clone(), p.dtls_parameters).await?;
        Ok(Empty {})
    }

    /// `restartIce`.
    pub(crate) async fn restart_ice(&mut self, p: TransportParams) -> Result<IceParameters, TransportError> {
        let j = self.joined()?;
        self.own_transport(&p.transport_id)?;
        Ok(j.router.restart_ice(p.transport_id, j.peer_id.clone()).await?)
    }

    /// The direction of one of this session's transports.
    /// The session must be joined (checked first by every caller).
    pub(super) fn own_transport(&self, id: &TransportId) -> Result<Direction, NotFound> {
        let transports = self.joined.as_ref().map(|j| &j.transports);
        transports.and_then(|t| t.get(id)).copied().ok_or_else(|| NotFound::new("transport", id))
    }
}
