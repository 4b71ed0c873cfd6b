//! Request and response bodies that poem-openapi has no ready type for.

use bytes::Bytes;
use poem::{IntoResponse, Request, RequestBody, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

/// A PUT body: the raw value, whatever the request's Content-Type.
///
/// The seed's `curl -d` examples send `application/x-www-form-urlencoded`,
/// others send `text/plain` or no Content-Type at all; poem-openapi's own
/// payload types answer 415 to some of these. This extractor accepts all of
/// them, yet documents exactly one media type (`application/octet-stream`),
/// the shape client generators handle. It only takes the body: the handler
/// reads it with the configured size limit.
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
                content_type: "application/octet-stream",
                schema: binary_schema(),
            }],
            required: true,
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

fn binary_schema() -> MetaSchemaRef {
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        format: Some("binary"),
        ..MetaSchema::new("string")
    }))
}

/// A value sent back as `text/plain; charset=utf-8`, without copying it.
pub struct TextValue(pub Bytes);

impl Payload for TextValue {
    const CONTENT_TYPE: &'static str = "text/plain; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new("string")))
    }
}

impl IntoResponse for TextValue {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type(Self::CONTENT_TYPE)
            .body(self.0)
    }
}
