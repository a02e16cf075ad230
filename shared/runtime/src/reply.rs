//! Request/reply helpers: decode by `Content-Type`, answer in the caller's encoding, and turn
//! every refusal into a typed [`ErrorReply`] with a `Mabeam-Error` header, a metric and a log
//! line.

use async_nats::HeaderMap;
use bytes::Bytes;
use mabeam_protocol::{
    codec::{decode, encode, ContentType, Message, CONTENT_TYPE_HEADER},
    DecodeError, ErrorCode, ErrorReply, Limits,
};

/// Header set on error replies, holding the error code.
pub const ERROR_HEADER: &str = "Mabeam-Error";

/// The content type a message declares (msgpack when absent).
pub fn content_type(headers: Option<&HeaderMap>) -> Result<ContentType, DecodeError> {
    ContentType::from_header(
        headers
            .and_then(|h| h.get(CONTENT_TYPE_HEADER))
            .map(|v| v.as_str()),
    )
}

/// Decodes a request or event body in its declared encoding.
pub fn decode_message<T: Message>(
    headers: Option<&HeaderMap>,
    payload: &[u8],
    limits: &Limits,
) -> Result<(T, ContentType), DecodeError> {
    let ct = content_type(headers)?;
    Ok((decode(ct, payload, limits)?, ct))
}

pub fn headers_for(ct: ContentType) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE_HEADER, ct.header_value());
    h
}

/// Encodes a successful reply.
pub fn ok_body<T: Message>(ct: ContentType, message: &T) -> (HeaderMap, Bytes) {
    match encode(ct, message) {
        Ok(b) => (headers_for(ct), b.into()),
        Err(e) => error_body(ct, ErrorCode::Internal, &e.to_string()),
    }
}

/// Encodes an error reply.
pub fn error_body(ct: ContentType, code: ErrorCode, message: &str) -> (HeaderMap, Bytes) {
    let mut h = headers_for(ct);
    h.insert(ERROR_HEADER, code.as_str());
    let reply = ErrorReply::new(code, message);
    let body = encode(ct, &reply).unwrap_or_default();
    (h, body.into())
}

/// Counts and logs a refused request; call once per refusal.
pub fn record_refusal(endpoint: &'static str, code: ErrorCode, message: &str) {
    metrics::counter!("mabeam_requests_refused_total", "endpoint" => endpoint, "code" => code.as_str())
        .increment(1);
    tracing::warn!(endpoint, code = code.as_str(), message, "request refused");
}

/// The reply to a request refused by a rate limit (counted by the limiter, not logged: a
/// flood must not become a flood of log lines).
pub fn rate_limited_body(ct: ContentType, endpoint: &str) -> (HeaderMap, Bytes) {
    error_body(
        ct,
        ErrorCode::RateLimited,
        &format!("too many requests on {endpoint}; retry later"),
    )
}

/// Reads an error reply from a response, if it is one.
pub fn as_error(headers: Option<&HeaderMap>, payload: &[u8]) -> Option<ErrorReply> {
    let headers = headers?;
    headers.get(ERROR_HEADER)?;
    let ct = content_type(Some(headers)).unwrap_or(ContentType::MsgPack);
    decode::<ErrorReply>(ct, payload, &Limits::default()).ok()
}

/// Answers a NATS request message (no-op when it has no reply subject).
pub async fn respond(
    client: &async_nats::Client,
    request: &async_nats::Message,
    (headers, body): (HeaderMap, Bytes),
) {
    if let Some(reply) = &request.reply {
        if let Err(e) = client
            .publish_with_headers(reply.clone(), headers, body)
            .await
        {
            tracing::warn!(error = %e, "cannot send reply");
        }
    }
}

/// Answers a request that arrived through a NATS micro-service endpoint.
pub async fn respond_to(
    request: &async_nats::service::Request,
    (headers, body): (HeaderMap, Bytes),
) {
    if let Err(e) = request.respond_with_headers(Ok(body), headers).await {
        tracing::warn!(error = %e, "cannot send reply");
    }
}
