//! Credentials that are more than a key in a header: requests signed per call.
//!
//! AWS Signature Version 4 (Bedrock) is computed by AWS's own `aws-sigv4` crate over the request exactly
//! as it will be sent: method, URL, the `content-type` and `x-amz-*` headers, and a hash of the body. The
//! signature, date and session token are then added as headers. Other headers (the operator's extra ones
//! unless they are `x-amz-*`, trace context added after signing) are sent unsigned, which AWS allows. Static credentials only: from
//! the provider's own variables or the standard `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
//! `AWS_SESSION_TOKEN`. No secret appears in `Debug`, logs or errors.

use std::time::SystemTime;

use http::{HeaderName, HeaderValue};

use crate::protocols::{ErrorKind, ProviderError, UpstreamRequest};
use crate::secret::Secret;

/// An AWS identity and where it signs.
#[derive(Debug)]
pub struct AwsSigner {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    pub region: String,
    /// The signing name of the service (`bedrock`).
    pub service: &'static str,
}

impl AwsSigner {
    /// Signs `req` as of `at`, adding `x-amz-date`, `authorization` and (with temporary credentials)
    /// `x-amz-security-token`.
    pub fn sign(&self, req: &mut UpstreamRequest, at: SystemTime) -> Result<(), ProviderError> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let failed = |what: &str| ProviderError::new(ErrorKind::BadRequest, format!("cannot sign the request: {what}"));
        // The signer reads the host from the URL (and would panic without one).
        let uri: http::Uri = req.url.parse().map_err(|_| failed("the provider's URL is not valid"))?;
        if uri.host().is_none() {
            return Err(failed("the provider's URL has no host"));
        }
        let credentials = aws_credential_types::Credentials::new(
            self.access_key_id.expose(),
            self.secret_access_key.expose(),
            self.session_token.as_ref().map(|t| t.expose().to_owned()),
            None,
            "switchyard-config",
        );
        let identity = credentials.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.service)
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .map_err(|_| failed("incomplete signing parameters"))?
            .into();
        let signed: Vec<(&str, &str)> = req
            .headers
            .iter()
            .filter(|(name, _)| *name == http::header::CONTENT_TYPE || name.as_str().starts_with("x-amz-"))
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
            .collect();
        let signable =
            SignableRequest::new("POST", req.url.as_str(), signed.into_iter(), SignableBody::Bytes(&req.body))
                .map_err(|_| failed("the request cannot be signed"))?;
        let (instructions, _) = sign(signable, &params).map_err(|_| failed("signing failed"))?.into_parts();
        let (headers, _) = instructions.into_parts();
        for header in headers {
            let name = HeaderName::from_static(header.name());
            let mut value =
                HeaderValue::from_str(header.value()).map_err(|_| failed("a signed header is not valid"))?;
            value.set_sensitive(header.sensitive() || name == http::header::AUTHORIZATION);
            req.headers.insert(name, value);
        }
        Ok(())
    }

    /// The secrets, for redaction.
    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        [&self.access_key_id, &self.secret_access_key].into_iter().chain(self.session_token.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// AWS's published SigV4 test suite, `post-vanilla`: the example credentials, `us-east-1`, service
    /// `service`, 2015-08-30T12:36:00Z, `POST /` on `example.amazonaws.com` with an empty body.
    #[test]
    fn the_published_post_vanilla_vector_is_signed_exactly() {
        let signer = AwsSigner {
            access_key_id: Secret::new("AKIDEXAMPLE"),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: None,
            region: "us-east-1".into(),
            service: "service",
        };
        let mut req = UpstreamRequest {
            url: "https://example.amazonaws.com/".into(),
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
        };
        signer.sign(&mut req, UNIX_EPOCH + Duration::from_secs(1_440_938_160)).unwrap();
        assert_eq!(req.headers["x-amz-date"], "20150830T123600Z");
        assert_eq!(
            req.headers["authorization"],
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
        assert!(req.headers["authorization"].is_sensitive());
        assert!(!req.headers.contains_key("x-amz-security-token"));
    }

    #[test]
    fn a_session_token_is_sent_and_signed_and_no_secret_is_in_debug() {
        let signer = AwsSigner {
            access_key_id: Secret::new("AKIDEXAMPLE"),
            secret_access_key: Secret::new("the-secret-access-key"),
            session_token: Some(Secret::new("the-session-token")),
            region: "eu-west-1".into(),
            service: "bedrock",
        };
        let mut req = UpstreamRequest {
            url: "https://bedrock-runtime.eu-west-1.amazonaws.com/model/a%3Ab/converse".into(),
            headers: [(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))].into_iter().collect(),
            body: bytes::Bytes::from_static(b"{}"),
        };
        signer.sign(&mut req, SystemTime::now()).unwrap();
        assert_eq!(req.headers["x-amz-security-token"], "the-session-token");
        let auth = req.headers["authorization"].to_str().unwrap();
        assert!(auth.contains("/eu-west-1/bedrock/aws4_request"), "{auth}");
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"), "{auth}");
        let debug = format!("{signer:?} {req:?}");
        assert!(!debug.contains("the-secret-access-key") && !debug.contains("the-session-token"), "{debug}");
    }
}
