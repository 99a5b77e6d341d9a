//! The transports area: router capabilities, `createTransport`, `connectTransport`,
//! `restartIce`.

use dspeak_schema::TransportId;
use dspeak_schema::media::{ConnectTransportParams, CreateTransportParams, CreateTransportResult, TransportParams};
use dspeak_schema::ortc::{IceParameters, RtpCapabilities};
use dspeak_schema::rooms::Empty;

use super::Session;
use crate::error::Error;
use dspeak_media::router;

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
        let created = j.room.router().create_transport(id.clone(), j.peer_id.clone(), p.direction).await?;
        self.joined_mut()?.transports.insert(id.clone());
        tracing::debug!(transport = %id, direction = ?p.direction, "transport created");
        Ok(created)
    }

    /// `connectTransport`.
    pub(crate) async fn connect_transport(&mut self, p: ConnectTransportParams) -> Result<Empty, Error> {
        let j = self.joined()?;
        self.own_transport(&p.transport_id)?;
        j.room.router().connect(p.transport_id, j.peer_id.clone(), p.dtls_parameters).await?;
        Ok(Empty {})
    }

    /// `restartIce`.
    pub(crate) async fn restart_ice(&mut self, p: TransportParams) -> Result<IceParameters, Error> {
        let j = self.joined()?;
        self.own_transport(&p.transport_id)?;
        Ok(j.room.router().restart_ice(p.transport_id, j.peer_id.clone()).await?)
    }

    /// Fails unless `id` is one of this session's transports.
    pub(super) fn own_transport(&self, id: &TransportId) -> Result<(), Error> {
        if self.joined()?.transports.contains(id) { Ok(()) } else { Err(Error::not_found("transport", id)) }
    }
}
