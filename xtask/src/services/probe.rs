//! "Is it up?" on the wire: a Redis `PING` and a Kafka `ApiVersions` request, hand-encoded so
//! xtask needs no client crate.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::ports::Probe;

/// How long one probe may wait to connect, and then for each read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends an inline `PING` to the Redis server at `addr`; ready when it replies `+PONG`.
///
/// A server still loading its append-only file replies `-LOADING`, which is "not yet".
pub(crate) fn redis_ping(addr: SocketAddr) -> Probe {
    let exchange = || -> std::io::Result<Vec<u8>> {
        let mut stream = connect(addr)?;
        stream.write_all(b"PING\r\n")?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 256];
        while !reply.windows(2).any(|w| w == b"\r\n") && reply.len() < 4096 {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&chunk[..n]);
        }
        Ok(reply)
    };
    match exchange() {
        Ok(reply) => parse_ping_reply(&reply),
        Err(e) => Probe::NotYet(e.to_string()),
    }
}

/// Reads the reply to `PING`: one RESP line.
fn parse_ping_reply(reply: &[u8]) -> Probe {
    let Some(end) = reply.windows(2).position(|w| w == b"\r\n") else {
        return Probe::NotYet(format!(
            "incomplete reply {:?}",
            String::from_utf8_lossy(reply)
        ));
    };
    let line = String::from_utf8_lossy(&reply[..end]);
    match line.as_bytes().first() {
        Some(b'+') if line[1..].eq_ignore_ascii_case("PONG") => Probe::Ready,
        Some(b'-') => Probe::NotYet(format!("server error {:?}", &line[1..])),
        _ => Probe::NotYet(format!("unexpected reply {line:?}")),
    }
}

/// Kafka's `ApiVersions` API key.
const API_VERSIONS_KEY: i16 = 18;
/// Kafka's `UNSUPPORTED_VERSION` error code: a broker that no longer serves `ApiVersions` v0
/// still answers it with this, so it also means "up".
const UNSUPPORTED_VERSION: i16 = 35;
/// Any sane `ApiVersions` response is far smaller; a bigger size means we are not talking to
/// a Kafka broker.
const MAX_RESPONSE: usize = 1 << 20;

/// Sends an `ApiVersions` v0 request to the Kafka listener at `addr`; ready when a well-formed
/// response for it comes back. A broker only opens its client listener once it is unfenced,
/// so an answer means it can serve requests.
pub(crate) fn kafka_api_versions(addr: SocketAddr) -> Probe {
    const CORRELATION_ID: i32 = 0x7874_6b31; // "xtk1"
    let exchange = || -> std::io::Result<Vec<u8>> {
        let mut stream = connect(addr)?;
        stream.write_all(&api_versions_request(CORRELATION_ID, "xtask-probe"))?;
        let mut size = [0u8; 4];
        stream.read_exact(&mut size)?;
        let size = usize::try_from(i32::from_be_bytes(size)).unwrap_or(usize::MAX);
        if size > MAX_RESPONSE {
            return Err(std::io::Error::other(format!(
                "response size {size} is not Kafka's"
            )));
        }
        let mut response = vec![0u8; size];
        stream.read_exact(&mut response)?;
        Ok(response)
    };
    match exchange() {
        Ok(response) => match parse_api_versions_response(&response, CORRELATION_ID) {
            Ok(_) => Probe::Ready,
            Err(why) => Probe::NotYet(why),
        },
        Err(e) => Probe::NotYet(e.to_string()),
    }
}

/// An `ApiVersions` v0 request, framed: size, then request header v1 (api key, api version,
/// correlation id, client id as a nullable string), then the (empty) v0 body.
fn api_versions_request(correlation_id: i32, client_id: &str) -> Vec<u8> {
    let client_id = &client_id.as_bytes()[..client_id.len().min(i16::MAX as usize)];
    let mut message = Vec::with_capacity(10 + client_id.len());
    message.extend_from_slice(&API_VERSIONS_KEY.to_be_bytes());
    message.extend_from_slice(&0i16.to_be_bytes());
    message.extend_from_slice(&correlation_id.to_be_bytes());
    message.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    message.extend_from_slice(client_id);
    let mut frame = (message.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&message);
    frame
}

/// Reads an `ApiVersions` v0 response (after its size): correlation id, error code, then the
/// array of (api key, min version, max version). Returns how many APIs the broker listed.
fn parse_api_versions_response(response: &[u8], correlation_id: i32) -> Result<usize, String> {
    let i16_at = |at: usize| {
        response
            .get(at..at + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
    };
    let i32_at = |at: usize| {
        response
            .get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let truncated = || format!("truncated ApiVersions response ({} bytes)", response.len());
    let got = i32_at(0).ok_or_else(truncated)?;
    if got != correlation_id {
        return Err(format!(
            "response for correlation id {got}, expected {correlation_id}"
        ));
    }
    match i16_at(4).ok_or_else(truncated)? {
        0 => {}
        UNSUPPORTED_VERSION => return Ok(0),
        code => return Err(format!("ApiVersions error code {code}")),
    }
    let count = i32_at(6).ok_or_else(truncated)?;
    let count = usize::try_from(count).map_err(|_| format!("bad API count {count}"))?;
    if response.len() < 10 + 6 * count {
        return Err(truncated());
    }
    let lists_itself = (0..count).any(|i| i16_at(10 + 6 * i) == Some(API_VERSIONS_KEY));
    if !lists_itself {
        return Err("the broker's API list lacks ApiVersions".to_string());
    }
    Ok(count)
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_ready(probe: &Probe) -> bool {
        matches!(probe, Probe::Ready)
    }

    fn not_yet(probe: Probe) -> String {
        match probe {
            Probe::NotYet(why) => why,
            Probe::Ready => panic!("expected not ready"),
        }
    }

    #[test]
    fn pong_is_ready_and_anything_else_is_not() {
        assert!(is_ready(&parse_ping_reply(b"+PONG\r\n")));
        assert!(is_ready(&parse_ping_reply(b"+pong\r\n")));
        let loading = not_yet(parse_ping_reply(
            b"-LOADING Redis is loading the dataset in memory\r\n",
        ));
        assert!(loading.contains("LOADING"), "{loading}");
        assert!(not_yet(parse_ping_reply(b"+PON")).contains("incomplete"));
        assert!(not_yet(parse_ping_reply(b"HTTP/1.1 400\r\n")).contains("unexpected"));
        assert!(not_yet(parse_ping_reply(b"")).contains("incomplete"));
    }

    #[test]
    fn api_versions_request_is_framed_as_kafka_expects() {
        let frame = api_versions_request(7, "ab");
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0, 0, 0, 12,    // size of what follows
            0, 18,          // api key: ApiVersions
            0, 0,           // api version 0
            0, 0, 0, 7,     // correlation id
            0, 2, b'a', b'b', // client id
        ];
        assert_eq!(frame, expected);
    }

    fn response(correlation_id: i32, error: i16, apis: &[(i16, i16, i16)]) -> Vec<u8> {
        let mut r = correlation_id.to_be_bytes().to_vec();
        r.extend_from_slice(&error.to_be_bytes());
        r.extend_from_slice(&(apis.len() as i32).to_be_bytes());
        for (key, min, max) in apis {
            for v in [key, min, max] {
                r.extend_from_slice(&v.to_be_bytes());
            }
        }
        r
    }

    #[test]
    fn api_versions_responses_are_checked() {
        let good = response(9, 0, &[(0, 0, 11), (18, 0, 4)]);
        assert_eq!(parse_api_versions_response(&good, 9), Ok(2));
        assert!(
            parse_api_versions_response(&good, 8)
                .unwrap_err()
                .contains("correlation id")
        );
        assert_eq!(
            parse_api_versions_response(&response(9, UNSUPPORTED_VERSION, &[]), 9),
            Ok(0)
        );
        assert!(
            parse_api_versions_response(&response(9, 3, &[]), 9)
                .unwrap_err()
                .contains("error code 3")
        );
        assert!(
            parse_api_versions_response(&good[..good.len() - 1], 9)
                .unwrap_err()
                .contains("truncated")
        );
        assert!(parse_api_versions_response(&response(9, 0, &[(0, 0, 11)]), 9).is_err());
        assert!(parse_api_versions_response(&[0, 0], 9).is_err());
    }
}
