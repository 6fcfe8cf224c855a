//! SASL authentication's client side: the tokens of a [`Conversation`], PLAIN in one round,
//! SCRAM-SHA-256/512 (RFC 5802, RFC 7677) in two, with the server's signature checked. The
//! connection carries them (SaslHandshake names the mechanism, then SaslAuthenticate carries
//! each token). No message here ever holds the password.

use std::num::NonZeroU32;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::SecureRandom;
use ring::{digest, hmac, pbkdf2};

use super::error::ControlError;
use super::security::{KafkaSasl, KafkaSaslMechanism};

/// Kafka's minimum iteration count for both SCRAM mechanisms; fewer is refused, as the Java
/// client does, so a fake server cannot make the proof cheap to attack.
const MIN_ITERATIONS: u32 = 4096;

/// The client's side of one SASL conversation, after the handshake: the tokens to send, each
/// computed from the broker's last answer. The connection carries them
/// (`BrokerConnection::open`), so this module never touches the network.
pub(crate) struct Conversation<'a> {
    sasl: &'a KafkaSasl,
    /// The SCRAM exchange, with the round it is at; `None` for PLAIN (one round).
    scram: Option<(ScramClient<'a>, ScramRound)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ScramRound {
    /// The client-first message went out; the server-first answer comes next.
    First,
    /// The client-final message went out; the server-final answer comes next.
    Final,
}

impl<'a> Conversation<'a> {
    /// Starts the conversation for `sasl`'s mechanism; returns it with the first token.
    pub(crate) fn start(sasl: &'a KafkaSasl) -> Result<(Self, Vec<u8>), ControlError> {
        match sasl.mechanism {
            KafkaSaslMechanism::Plain => {
                // authzid (empty), authcid, password, separated by NUL (RFC 4616).
                let mut token = Vec::with_capacity(sasl.username.len() + sasl.password.len() + 2);
                token.push(0);
                token.extend_from_slice(sasl.username.as_bytes());
                token.push(0);
                token.extend_from_slice(sasl.password.as_bytes());
                Ok((Self { sasl, scram: None }, token))
            }
            KafkaSaslMechanism::ScramSha256 | KafkaSaslMechanism::ScramSha512 => {
                let hash = if sasl.mechanism == KafkaSaslMechanism::ScramSha256 {
                    ScramHash::Sha256
                } else {
                    ScramHash::Sha512
                };
                let scram = ScramClient::new(hash, &sasl.username, &sasl.password, new_nonce()?);
                let first = scram.client_first().into_bytes();
                let conversation = Self {
                    sasl,
                    scram: Some((scram, ScramRound::First)),
                };
                Ok((conversation, first))
            }
        }
    }

    /// Takes the broker's answer to the last token: the next token to send, or `None` when
    /// the conversation is over and the broker proved itself (SCRAM's server signature).
    /// `address` names the broker in an error.
    pub(crate) fn answer(
        &mut self,
        server: &[u8],
        address: &str,
    ) -> Result<Option<Vec<u8>>, ControlError> {
        let sasl = self.sasl;
        let Some((scram, round)) = &mut self.scram else {
            return Ok(None);
        };
        let failed = |why: String| {
            ControlError::refused(format!(
                "SASL {} authentication of user {:?} at the Kafka broker at {address} failed: {why}",
                sasl.mechanism, sasl.username,
            ))
        };
        match round {
            ScramRound::First => {
                let last = scram.client_final(server).map_err(failed)?;
                *round = ScramRound::Final;
                Ok(Some(last.into_bytes()))
            }
            ScramRound::Final => {
                scram.verify_server_final(server).map_err(failed)?;
                Ok(None)
            }
        }
    }
}

/// 24 random bytes, base64: printable and without commas, as RFC 5802 asks of a nonce.
fn new_nonce() -> Result<String, ControlError> {
    let mut bytes = [0u8; 24];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ControlError::refused("the system's random number generator failed"))?;
    Ok(BASE64.encode(bytes))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha256 => hmac::HMAC_SHA256,
            ScramHash::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramHash::Sha256 => &digest::SHA256,
            ScramHash::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramHash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn len(self) -> usize {
        self.digest().output_len()
    }
}

/// The client side of a SCRAM exchange without channel binding (`n,,`), as Kafka's
/// `ScramSaslClient` runs it. The password is used as UTF-8 without SASLprep, like the Java
/// client, so both derive the same keys.
struct ScramClient<'a> {
    hash: ScramHash,
    password: &'a str,
    client_nonce: String,
    client_first_bare: String,
    server_signature: Option<Vec<u8>>,
}

impl<'a> ScramClient<'a> {
    fn new(hash: ScramHash, username: &str, password: &'a str, client_nonce: String) -> Self {
        // saslname: `=` and `,` are escaped (RFC 5802, section 5.1).
        let name = username.replace('=', "=3D").replace(',', "=2C");
        let client_first_bare = format!("n={name},r={client_nonce}");
        Self {
            hash,
            password,
            client_nonce,
            client_first_bare,
            server_signature: None,
        }
    }

    /// client-first-message.
    fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// client-final-message for the server-first-message; remembers the signature the server
    /// must prove itself with.
    fn client_final(&mut self, server_first: &[u8]) -> Result<String, String> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| "the server's first SCRAM message is not UTF-8".to_string())?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attribute in server_first.split(',') {
            match attribute.split_once('=') {
                Some(("r", value)) => nonce = Some(value),
                Some(("s", value)) => salt = Some(value),
                Some(("i", value)) => iterations = Some(value),
                Some(("m", _)) => {
                    return Err("the server asks for a SCRAM extension this client lacks".into());
                }
                Some(("e", value)) => return Err(format!("the server refused: {value}")),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(
                "the server's first SCRAM message lacks its nonce, salt or iteration count".into(),
            );
        };
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err("the server's nonce does not extend the client's".into());
        }
        let salt = BASE64
            .decode(salt)
            .map_err(|_| "the server's salt is not base64".to_string())?;
        let iterations = iterations
            .parse::<u32>()
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| "the server's iteration count is not a positive number".to_string())?;
        if iterations.get() < MIN_ITERATIONS {
            return Err(format!(
                "the server asks for {iterations} iterations, fewer than the minimum of {MIN_ITERATIONS}"
            ));
        }

        let mut salted = vec![0u8; self.hash.len()];
        pbkdf2::derive(
            self.hash.pbkdf2(),
            iterations,
            &salt,
            self.password.as_bytes(),
            &mut salted,
        );
        let salted = hmac::Key::new(self.hash.hmac(), &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(self.hash.digest(), client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = hmac::sign(
            &hmac::Key::new(self.hash.hmac(), stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(client_signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac::sign(&salted, b"Server Key");
        let server_signature = hmac::sign(
            &hmac::Key::new(self.hash.hmac(), server_key.as_ref()),
            auth_message.as_bytes(),
        );
        self.server_signature = Some(server_signature.as_ref().to_vec());
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)))
    }

    /// Checks the server-final-message: the server proves it knows the password too.
    fn verify_server_final(&self, server_final: &[u8]) -> Result<(), String> {
        let server_final = std::str::from_utf8(server_final)
            .map_err(|_| "the server's final SCRAM message is not UTF-8".to_string())?;
        let first = server_final.split(',').next().unwrap_or_default();
        if let Some(error) = first.strip_prefix("e=") {
            return Err(format!("the server refused: {error}"));
        }
        let signature = first
            .strip_prefix("v=")
            .and_then(|v| BASE64.decode(v).ok())
            .ok_or_else(|| "the server's final SCRAM message has no signature".to_string())?;
        match &self.server_signature {
            Some(expected) if *expected == signature => Ok(()),
            Some(_) => Err("the server's signature is wrong: it does not know the password (a spoofed broker?)".into()),
            None => Err("the server's final message came before its first".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC7677_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

    /// The example exchange of RFC 7677, section 3 (user `user`, password `pencil`).
    #[test]
    fn scram_sha_256_matches_rfc_7677() {
        let mut scram = ScramClient::new(
            ScramHash::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        assert_eq!(scram.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let last = scram.client_final(RFC7677_SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(
            last,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        scram
            .verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(
            scram
                .verify_server_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .unwrap_err()
                .contains("signature is wrong")
        );
        assert!(
            scram
                .verify_server_final(b"e=invalid-proof")
                .unwrap_err()
                .contains("invalid-proof")
        );
    }

    /// The same exchange with SHA-512. No RFC has an example; the expected values were
    /// computed with Python's `hashlib.pbkdf2_hmac` and `hmac` from RFC 5802's formulas (the same
    /// script reproduces RFC 7677's SHA-256 values above).
    #[test]
    fn scram_sha_512_matches_an_independent_computation() {
        let mut scram = ScramClient::new(
            ScramHash::Sha512,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        let last = scram.client_final(RFC7677_SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(
            last,
            format!("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p={SHA512_PROOF}")
        );
        scram
            .verify_server_final(format!("v={SHA512_SERVER_SIGNATURE}").as_bytes())
            .unwrap();
    }

    const SHA512_PROOF: &str =
        "gMGXRcevScNtxZ6/8lQYpGtnsNAc3mGcmNomv+xnoOMw+3R2xNJdMNnzMlTN8PPC6wdp6dybEmDYXYTxwnYPJQ==";
    const SHA512_SERVER_SIGNATURE: &str =
        "ZQnYEgWQMFmmsM8aQMF0nDDCy/AgCzkwk8CmMZYcMg0vSVlKDanekLtifDSeVGT4+5ZxXnJq199RVG2rR7N7Zw==";

    #[test]
    fn a_server_that_cheats_is_refused() {
        let client = || ScramClient::new(ScramHash::Sha256, "user", "pencil", "abc".into());
        assert!(
            client()
                .client_final(b"r=xyz123,s=QSXCR+Q6sek8bf92,i=4096")
                .unwrap_err()
                .contains("nonce")
        );
        assert!(
            client()
                .client_final(b"r=abc,s=QSXCR+Q6sek8bf92,i=4096")
                .unwrap_err()
                .contains("nonce")
        );
        assert!(
            client()
                .client_final(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=1")
                .unwrap_err()
                .contains("minimum of 4096")
        );
        assert!(
            client()
                .client_final(b"r=abcdef,i=4096")
                .unwrap_err()
                .contains("salt")
        );
        assert!(client().verify_server_final(b"v=AAAA").is_err());
    }

    #[test]
    fn user_names_are_escaped() {
        let scram = ScramClient::new(ScramHash::Sha256, "a=b,c", "p", "n0nce".into());
        assert_eq!(scram.client_first(), "n,,n=a=3Db=2Cc,r=n0nce");
    }

    #[test]
    fn nonces_are_fresh_and_printable() {
        let (a, b) = (new_nonce().unwrap(), new_nonce().unwrap());
        assert_ne!(a, b);
        assert!(a.len() >= 32 && !a.contains(',') && a.is_ascii());
    }
}
