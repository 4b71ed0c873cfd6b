//! Request and response bodies that poem-openapi has no ready type for.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use poem::error::ReadBodyError;
use poem::{IntoResponse, Request, RequestBody, Response};
use poem_openapi::error::{ContentTypeError, ParseRequestPayloadError};
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Problem;

/// A PUT body: the raw value, whatever the request's Content-Type.
///
/// The seed's `curl -d` examples send `application/x-www-form-urlencoded`,
/// others send `text/plain` or no Content-Type at all; poem-openapi's own
/// payload types answer 415 to some of these. This extractor accepts all of
/// them, yet documents exactly one media type, `text/plain` (what the value
/// is: Swagger UI then offers a text box, and generated clients take a
/// string; one type, as progenitor takes no more). It only takes the body:
/// the handler reads it with the configured size limit.
pub struct ValueBody(pub poem::Body);

impl<'a> ApiExtractor<'a> for ValueBody {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some(
                "The value, as UTF-8 text. Any Content-Type is accepted (or none); an empty body \
                 stores an empty value.",
            ),
            content: vec![MetaMediaType {
                content_type: "text/plain",
                schema: text_schema(),
            }],
            // No body stores the empty value, as the seed's PUT did.
            required: false,
        })
    }

    async fn from_request(
        _request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Ok(Self(body.take()?))
    }
}

fn text_schema() -> MetaSchemaRef {
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        example: Some(serde_json::json!("value1")),
        ..MetaSchema::new("string")
    }))
}

/// The example a JSON request body shows in the spec (and so in Swagger
/// UI's "Try it out"). Types documented as a named schema carry their example
/// there (`#[oai(example)]`) and keep the default; inline ones, such as
/// arrays, say it here.
pub trait BodyExample {
    fn body_example() -> Option<serde_json::Value> {
        None
    }

    /// Whether the body must be a JSON object. serde's derived structs also
    /// take an array of their fields in order, which the spec does not
    /// declare and no client means.
    const AN_OBJECT: bool = false;
}

/// A JSON request body parsed by serde straight into `T`.
///
/// poem-openapi's `Json<T>` parses into a `serde_json::Value` first and then
/// walks it, which costs a tree of allocations per request (a fifth of a
/// large batch's CPU time); and its `String` accepts numbers and booleans
/// where the spec says string. This reads the same bytes with serde's
/// derive, strictly and in one pass, and documents the body exactly as
/// `Json<T>` would, from `T`'s poem-openapi schema. Constraints the schema
/// states (`minimum`, `minLength`) are checked by the handlers.
pub struct JsonBody<T>(pub T);

impl<T> std::ops::Deref for JsonBody<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'a, T: Type + BodyExample + DeserializeOwned + Send> ApiExtractor<'a> for JsonBody<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: <Json<T> as Payload>::CONTENT_TYPE,
                schema: match (T::schema_ref(), T::body_example()) {
                    (MetaSchemaRef::Inline(schema), Some(example)) => {
                        MetaSchemaRef::Inline(Box::new(MetaSchema {
                            example: Some(example),
                            ..*schema
                        }))
                    }
                    (schema, _) => schema,
                },
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        match request.content_type() {
            Some(content_type) if <Json<T> as Payload>::check_content_type(content_type) => {}
            Some(content_type) => {
                return Err(ContentTypeError::NotSupported {
                    content_type: content_type.to_owned(),
                }
                .into());
            }
            None => return Err(ContentTypeError::ExpectContentType.into()),
        }
        let bytes = body.take()?.into_bytes().await?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if T::AN_OBJECT && first.is_some_and(|b| *b != b'{') {
            return Err(ParseRequestPayloadError {
                reason: "the body must be a JSON object (see the spec for this operation, /docs)"
                    .to_owned(),
            }
            .into());
        }
        if first.is_none() {
            // serde's own words ("EOF while parsing a value at line 1
            // column 0") say nothing of what to send.
            return Err(ParseRequestPayloadError {
                reason: "the body is empty: this operation takes a JSON document (its schema \
                         and an example are in the spec, /docs)"
                    .to_owned(),
            }
            .into());
        }
        serde_json::from_slice(&bytes).map(Self).map_err(|err| {
            ParseRequestPayloadError {
                reason: err.to_string(),
            }
            .into()
        })
    }
}

/// A JSON response serialised by serde straight from `T` (poem-openapi's
/// `Json<T>` builds a `serde_json::Value` first), documented from `T`'s
/// poem-openapi schema.
pub struct JsonReply<T>(pub T);

impl<T: Type + Serialize + Send> Payload for JsonReply<T> {
    const CONTENT_TYPE: &'static str = <Json<T> as Payload>::CONTENT_TYPE;

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Serialize + Send> IntoResponse for JsonReply<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => Response::builder()
                .content_type("application/json; charset=utf-8")
                .body(body),
            Err(err) => {
                Problem::internal(format!("cannot encode the response: {err}")).into_response()
            }
        }
    }
}

/// The body a client sent, as an operation takes it: read whole already
/// (the server's lean path reads a hot request's body with its head), or
/// still arriving.
pub enum SentBody {
    Whole(Bytes),
    Streaming(poem::Body),
}

/// A whole body of at most `limit` bytes, as the chunks it came in: a
/// value sent in one chunk is taken without a copy, one read whole already
/// without a pass through a body reader (~640 of a lean PUT's ~16,000
/// instructions).
///
/// Why not poem's `Body::into_bytes_limit`: it reads through a 4 KiB
/// buffer held in its future, which made every request's future (copied
/// whole into its task) 4 KiB larger, and copies each byte once more.
pub async fn read_limited(body: SentBody, limit: usize) -> Result<Bytes, ReadBodyError> {
    let body: BoxBody<Bytes, std::io::Error> = match body {
        SentBody::Whole(bytes) if bytes.len() > limit => {
            return Err(ReadBodyError::PayloadTooLarge);
        }
        SentBody::Whole(bytes) => return Ok(bytes),
        SentBody::Streaming(body) => body.into(),
    };
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => Err(ReadBodyError::PayloadTooLarge),
        Err(err) => Err(ReadBodyError::Io(match err.downcast::<std::io::Error>() {
            Ok(io) => *io,
            Err(other) => std::io::Error::other(other),
        })),
    }
}

/// Whether reading a body failed because it stopped arriving (the
/// connection layer's `--body-timeout` ends the read with `TimedOut`,
/// which poem may wrap in `io::Error`s of its own).
pub fn timed_out(err: &ReadBodyError) -> bool {
    let ReadBodyError::Io(io) = err else {
        return false;
    };
    let mut next = Some(io);
    while let Some(io) = next {
        if io.kind() == std::io::ErrorKind::TimedOut {
            return true;
        }
        next = io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<std::io::Error>());
    }
    false
}
