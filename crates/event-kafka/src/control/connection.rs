//! One connection to one broker: TCP or TLS, Kafka's 4-byte size framing, request headers with
//! correlation ids, the ApiVersions negotiation and SASL when it opens. One request at a time:
//! the control plane sends few, small requests, so pipelining would buy nothing.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::error::{ControlError, FailureKind, KafkaCode};
use super::sasl::Conversation;
use super::security::KafkaSasl;
use super::versions::{ApiRequest, ApiVersionTable, api_versions_first_try};

/// The largest response accepted: Kafka's own default limit on a request
/// (`socket.request.max.bytes`). A larger size means the peer is not a Kafka broker.
const MAX_RESPONSE_BYTES: i32 = 100 * 1024 * 1024;

/// When a call must be finished; every network step of the call is bounded by it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    at: Instant,
    total: Duration,
}

impl Deadline {
    pub(crate) fn after(total: Duration) -> Self {
        Self {
            at: Instant::now() + total,
            total,
        }
    }

    pub(crate) fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Runs `step`, failing with a timeout that says what did not finish when the deadline
    /// passes first.
    pub(crate) async fn bound<T>(
        &self,
        what: impl FnOnce() -> String,
        step: impl Future<Output = Result<T, ControlError>>,
    ) -> Result<T, ControlError> {
        match tokio::time::timeout(self.remaining(), step).await {
            Ok(result) => result,
            Err(_) => Err(ControlError::new(
                FailureKind::Timeout,
                format!("{} did not finish within {:?}", what(), self.total),
            )),
        }
    }
}

/// What every new connection needs: the client id, TLS and SASL.
pub(crate) struct ConnectSettings {
    pub(crate) client_id: StrBytes,
    pub(crate) tls: Option<Arc<ClientConfig>>,
    pub(crate) sasl: Option<KafkaSasl>,
}

/// `host:port` split, with `[v6]:port` brackets removed from the host.
pub(crate) fn split_host_port(address: &str) -> Result<(&str, u16), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{address:?} has no port; write host:port"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(format!("{address:?} has no host; write host:port"));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{address:?} has no valid port; write host:port"))?;
    Ok((host, port))
}

/// `host:port` for a host and port from a broker's answer (IPv6 hosts in brackets).
pub(crate) fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(stream) => stream.write_all(data).await,
            Stream::Tls(stream) => {
                // rustls buffers records until flushed.
                stream.write_all(data).await?;
                stream.flush().await
            }
        }
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Stream::Plain(stream) => stream.read_exact(buf).await.map(|_| ()),
            Stream::Tls(stream) => stream.read_exact(buf).await.map(|_| ()),
        }
    }
}

/// An open, negotiated and (when configured) authenticated connection to one broker.
pub(crate) struct BrokerConnection {
    address: String,
    stream: Stream,
    versions: ApiVersionTable,
    next_correlation_id: i32,
    client_id: StrBytes,
    /// When SASL re-authentication is due (KIP-368): the broker closes the connection at the
    /// end of the session it granted, so the client opens a new one a little earlier.
    renew_by: Option<Instant>,
    /// A request was written and its whole response not yet read: the caller's future was
    /// dropped mid-exchange, and the stream holds a stale response.
    in_flight: bool,
}

impl BrokerConnection {
    /// Connects to `address`, negotiates API versions and authenticates.
    pub(crate) async fn open(
        address: &str,
        settings: &ConnectSettings,
        deadline: &Deadline,
    ) -> Result<Self, ControlError> {
        let (host, _) = split_host_port(address).map_err(ControlError::refused)?;
        let tcp = deadline
            .bound(
                || format!("connecting to the Kafka broker at {address}"),
                async {
                    TcpStream::connect(address).await.map_err(|e| {
                        ControlError::io(
                            format!("cannot connect to the Kafka broker at {address}"),
                            e,
                        )
                    })
                },
            )
            .await?;
        // Requests are small and awaited one by one: no reason to wait for more bytes.
        let _ = tcp.set_nodelay(true);
        let stream = match &settings.tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let name = ServerName::try_from(host.to_string()).map_err(|_| {
                    ControlError::refused(format!(
                        "{host:?} (from {address}) is not a valid TLS server name"
                    ))
                })?;
                let connector = TlsConnector::from(Arc::clone(config));
                let tls = deadline
                    .bound(
                        || format!("the TLS handshake with the Kafka broker at {address}"),
                        async {
                            connector
                                .connect(name, tcp)
                                .await
                                .map_err(|e| tls_error(address, e))
                        },
                    )
                    .await?;
                Stream::Tls(Box::new(tls))
            }
        };
        let mut connection = Self {
            address: address.to_string(),
            stream,
            versions: ApiVersionTable::default(),
            next_correlation_id: 1,
            client_id: settings.client_id.clone(),
            renew_by: None,
            in_flight: false,
        };
        connection.versions = connection
            .negotiate_versions(deadline)
            .await
            .map_err(|mut e| {
                if e.kind == FailureKind::Io && settings.tls.is_none() {
                    // A TLS listener drops a client whose first bytes are not a handshake.
                    e.message.push_str(
                        " (the broker closed the connection: if its listener uses TLS, turn TLS on with KAFKA_TLS_*)",
                    );
                }
                e
            })?;
        tracing::debug!(broker = %address, versions = ?connection.versions, "Kafka control connection open");
        if let Some(credentials) = &settings.sasl {
            let lifetime = connection.authenticate(credentials, deadline).await?;
            connection.renew_by = lifetime.map(|l| Instant::now() + l.mul_f64(0.85));
        }
        Ok(connection)
    }

    /// Authenticates with SASL: SaslHandshake names the mechanism, then one SaslAuthenticate
    /// round per token of the [`Conversation`]. Returns the session lifetime the broker
    /// granted, if any.
    async fn authenticate(
        &mut self,
        sasl: &KafkaSasl,
        deadline: &Deadline,
    ) -> Result<Option<Duration>, ControlError> {
        let version = self.version::<SaslHandshakeRequest>()?;
        let request = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str(sasl.mechanism.as_str()));
        let response = self.send(&request, version, deadline).await?;
        if let Some(code) = KafkaCode::from_code(response.error_code) {
            let offered: Vec<&str> = response.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(ControlError::new(
                FailureKind::Kafka(code),
                format!(
                    "the Kafka broker at {} refused SASL mechanism {} ({code}); it offers [{}]: set KAFKA_SASL_MECHANISM to one of them",
                    self.address,
                    sasl.mechanism,
                    offered.join(", ")
                ),
            ));
        }
        let (mut conversation, mut token) = Conversation::start(sasl)?;
        loop {
            let (answer, lifetime) = self.sasl_round(sasl, token, deadline).await?;
            match conversation.answer(&answer, &self.address)? {
                Some(next) => token = next,
                None => return Ok(lifetime),
            }
        }
    }

    /// One SaslAuthenticate round: sends a token, returns the broker's token and the session
    /// lifetime it granted.
    async fn sasl_round(
        &mut self,
        sasl: &KafkaSasl,
        token: Vec<u8>,
        deadline: &Deadline,
    ) -> Result<(Bytes, Option<Duration>), ControlError> {
        let version = self.version::<SaslAuthenticateRequest>()?;
        let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
        let response = self.send(&request, version, deadline).await?;
        if let Some(code) = KafkaCode::from_code(response.error_code) {
            let detail = response
                .error_message
                .as_deref()
                .filter(|m| !m.is_empty())
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            return Err(ControlError::new(
                FailureKind::Kafka(code),
                format!(
                    "SASL {} authentication of user {:?} at the Kafka broker at {} failed ({code}){detail}; check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
                    sasl.mechanism, sasl.username, self.address
                ),
            ));
        }
        let lifetime = (version >= 1 && response.session_lifetime_ms > 0)
            .then(|| Duration::from_millis(response.session_lifetime_ms.unsigned_abs()));
        Ok((response.auth_bytes, lifetime))
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    pub(crate) fn versions(&self) -> &ApiVersionTable {
        &self.versions
    }

    /// Whether the connection must be replaced before the next request: the SASL session
    /// the broker granted is about to end, or an abandoned request left its response unread.
    pub(crate) fn needs_renewal(&self) -> bool {
        self.in_flight || self.renew_by.is_some_and(|at| Instant::now() >= at)
    }

    /// The version to send `R` at on this connection.
    pub(crate) fn version<R: ApiRequest>(&self) -> Result<i16, ControlError> {
        self.versions.version::<R>(&self.address)
    }

    /// Sends a request built for `version` and decodes its response. After an error the
    /// connection's state is unknown: drop it.
    pub(crate) async fn send<R: ApiRequest>(
        &mut self,
        request: &R,
        version: i16,
        deadline: &Deadline,
    ) -> Result<R::Response, ControlError> {
        let mut body = self.round_trip(request, version, deadline).await?;
        R::Response::decode(&mut body, version).map_err(|e| {
            ControlError::protocol(format!(
                "cannot decode the {} v{version} response of the Kafka broker at {}: {e}",
                R::NAME,
                self.address
            ))
        })
    }

    /// Writes one framed request and reads the framed response with the same correlation id;
    /// returns the response body after its header.
    async fn round_trip<R: ApiRequest>(
        &mut self,
        request: &R,
        version: i16,
        deadline: &Deadline,
    ) -> Result<Bytes, ControlError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1).max(1);
        let frame =
            encode_frame(request, version, correlation_id, &self.client_id).map_err(|e| {
                ControlError::protocol(format!(
                    "cannot encode a {} v{version} request: {e}",
                    R::NAME
                ))
            })?;

        self.in_flight = true;
        let address = &self.address;
        let stream = &mut self.stream;
        let exchange = async {
            let broken = |e| {
                ControlError::io(
                    format!(
                        "the connection to the Kafka broker at {address} failed during a {} request",
                        R::NAME
                    ),
                    e,
                )
            };
            stream.write_all(&frame).await.map_err(broken)?;
            let mut size = [0u8; 4];
            stream.read_exact(&mut size).await.map_err(broken)?;
            let size = i32::from_be_bytes(size);
            if !(4..=MAX_RESPONSE_BYTES).contains(&size) {
                return Err(ControlError::protocol(format!(
                    "{address} answered with a frame of {size} bytes: is it a Kafka broker's client listener (and does it expect TLS or not)?"
                )));
            }
            let mut body = vec![0u8; size as usize];
            stream.read_exact(&mut body).await.map_err(broken)?;
            Ok(Bytes::from(body))
        };
        let mut response = deadline
            .bound(
                || format!("the {} request to the Kafka broker at {address}", R::NAME),
                exchange,
            )
            .await?;
        self.in_flight = false;

        let header_version = R::KEY.response_header_version(version);
        let header = ResponseHeader::decode(&mut response, header_version).map_err(|e| {
            ControlError::protocol(format!(
                "cannot decode a response header from the Kafka broker at {address}: {e}"
            ))
        })?;
        if header.correlation_id != correlation_id {
            return Err(ControlError::protocol(format!(
                "the Kafka broker at {address} answered correlation id {} to request {correlation_id}",
                header.correlation_id
            )));
        }
        Ok(response)
    }

    /// ApiVersions: what the broker implements. Tries this client's highest version first; a
    /// broker that does not know it answers UNSUPPORTED_VERSION in v0 with its own range.
    async fn negotiate_versions(
        &mut self,
        deadline: &Deadline,
    ) -> Result<ApiVersionTable, ControlError> {
        let mut version = api_versions_first_try();
        loop {
            let mut request = ApiVersionsRequest::default();
            if version >= 3 {
                request.client_software_name = StrBytes::from_static_str("eventbus");
                request.client_software_version =
                    StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
            }
            let body = self.round_trip(&request, version, deadline).await?;
            if let Ok(response) = ApiVersionsResponse::decode(&mut body.clone(), version)
                && response.error_code == 0
            {
                return Ok(ApiVersionTable::from_response(&response));
            }
            let fallback = ApiVersionsResponse::decode(&mut body.clone(), 0).map_err(|e| {
                ControlError::protocol(format!(
                    "{} did not answer ApiVersions like a Kafka broker: {e}",
                    self.address
                ))
            })?;
            let code = KafkaCode::from_code(fallback.error_code);
            let broker_max = fallback
                .api_keys
                .iter()
                .find(|api| api.api_key == ApiKey::ApiVersions as i16)
                .map(|api| api.max_version);
            match (code, broker_max) {
                (Some(KafkaCode(35)), Some(max)) if max < version && max >= 0 => version = max,
                (Some(code), _) => {
                    return Err(ControlError::kafka(
                        code,
                        &format!("negotiating API versions with {}", self.address),
                        None,
                    ));
                }
                (None, _) => {
                    return Err(ControlError::protocol(format!(
                        "{} answered ApiVersions v{version} in a form this client cannot read",
                        self.address
                    )));
                }
            }
        }
    }
}

/// The request's frame: size, header, body. kafka-protocol's errors are `anyhow` errors, which
/// this crate does not otherwise use, so they become text here.
fn encode_frame<R: ApiRequest>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
) -> Result<BytesMut, String> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id.clone()));
    let mut frame = BytesMut::with_capacity(256);
    frame.put_i32(0); // the size, written below
    header
        .encode(&mut frame, R::KEY.request_header_version(version))
        .map_err(|e| e.to_string())?;
    request
        .encode(&mut frame, version)
        .map_err(|e| e.to_string())?;
    let size =
        i32::try_from(frame.len() - 4).map_err(|_| "the request is too large".to_string())?;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame)
}

/// A failed TLS handshake, with what to change when the certificate is not trusted.
fn tls_error(address: &str, e: io::Error) -> ControlError {
    let untrusted = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|inner| matches!(inner, rustls::Error::InvalidCertificate(_)));
    if untrusted {
        ControlError::refused(format!(
            "the TLS certificate of the Kafka broker at {address} is not trusted or does not name this host ({e}): set KAFKA_TLS_CA_FILE to the CA that signed it"
        ))
    } else {
        let mut error = ControlError::io(
            format!("the TLS handshake with the Kafka broker at {address} failed"),
            e,
        );
        if matches!(
            error
                .source
                .as_deref()
                .and_then(|s| s.downcast_ref::<io::Error>())
                .map(io::Error::kind),
            Some(io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset)
        ) {
            error.message.push_str(
                " (the broker closed the connection: if its listener is PLAINTEXT or SASL_PLAINTEXT, turn TLS off)",
            );
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_are_split() {
        assert_eq!(split_host_port("localhost:9092"), Ok(("localhost", 9092)));
        assert_eq!(split_host_port("[::1]:9093"), Ok(("::1", 9093)));
        assert!(split_host_port("localhost").is_err());
        assert!(split_host_port(":9092").is_err());
        assert!(split_host_port("host:0").is_err());
        assert!(split_host_port("host:http").is_err());
        assert_eq!(join_host_port("::1", 9092), "[::1]:9092");
        assert_eq!(join_host_port("broker-1", 9092), "broker-1:9092");
    }

    #[test]
    fn frames_start_with_their_size() {
        let frame = encode_frame(
            &ApiVersionsRequest::default(),
            0,
            7,
            &StrBytes::from_static_str("eventbus"),
        )
        .unwrap();
        let size = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
        assert_eq!(size as usize, frame.len() - 4);
        // api key 18 (ApiVersions), version 0, correlation id 7, client id "eventbus".
        assert_eq!(&frame[4..12], &[0, 18, 0, 0, 0, 0, 0, 7]);
        assert_eq!(&frame[12..14], &[0, 8]);
        assert_eq!(&frame[14..], b"eventbus");
    }
}
