//! Values going out as text: inside a JSON answer (sharing the store's
//! bytes), or as a whole `text/plain` body.

use std::borrow::Cow;

use bytes::Bytes;
use poem::http::{HeaderValue, header};
use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use serde::Serialize;

use crate::domain::Value;

/// A stored value inside a JSON answer (a listing, a batch result),
/// documented as a string but sharing the store's bytes: serialised
/// straight from them, never copied into a `String` first.
#[derive(Clone)]
pub struct Text(pub Value);

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.as_str().fmt(f)
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Type for Text {
    const IS_REQUIRED: bool = true;

    type RawValueType = Self;

    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        String::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        String::schema_ref()
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl ToJSON for Text {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::String(self.0.as_str().to_owned()))
    }
}

impl ParseFromJSON for Text {
    fn parse_from_json(value: Option<serde_json::Value>) -> ParseResult<Self> {
        String::parse_from_json(value)
            .map(|text| Self(Value::from(text)))
            .map_err(ParseError::propagate)
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

/// A value sent back as `text/plain; charset=utf-8`, without copying it.
pub struct TextValue(pub Bytes);

impl Payload for TextValue {
    const CONTENT_TYPE: &'static str = "text/plain; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            example: Some(serde_json::json!("value1")),
            ..MetaSchema::new("string")
        }))
    }
}

impl IntoResponse for TextValue {
    fn into_response(self) -> Response {
        // A static header value: `content_type(&str)` would parse and copy
        // it into an allocation on every GET.
        Response::builder()
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static(Self::CONTENT_TYPE),
            )
            .body(self.0)
    }
}
