//! HTTP conditional requests (RFC 9110): ETags and the If-* headers.

use std::borrow::Cow;
use std::marker::PhantomData;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseFromParameter, ParseResult, Type};

use super::{Problem, shown};
use crate::domain::{Condition, Revisions};

/// A key's ETag: its `mod_revision`, quoted.
pub fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

/// What the spec declares an `If-Match` / `If-None-Match` value to be: `*`,
/// or a list of entity tags, each in double quotes, weak ones after `W/`
/// (empty: no condition). The parser below takes exactly these.
pub const ETAGS_PATTERN: &str = r#"^\s*(\*|(W/)?"[^"]*"(\s*,\s*(W/)?"[^"]*")*)?\s*$"#;

/// A header's text as an operation takes it: the spec declares `P`'s
/// pattern, but any value is taken here, so that the header's parser
/// answers one that does not match with a 400 that says how to send it, in
/// the same words on the fast path.
pub struct HeaderText<P>(pub String, PhantomData<fn() -> P>);

/// What [`HeaderText`] declares: a name for its schema, and the pattern.
pub trait HeaderPattern: Send + Sync + 'static {
    const NAME: &'static str;
    const PATTERN: &'static str;
}

/// `If-Match` / `If-None-Match`: [`ETAGS_PATTERN`], read by [`parse_etags`].
pub struct EtagsPattern;

impl HeaderPattern for EtagsPattern {
    const NAME: &'static str = "string(entity-tags)";
    const PATTERN: &'static str = ETAGS_PATTERN;
}

pub type EntityTags = HeaderText<EtagsPattern>;

impl<P: HeaderPattern> Type for HeaderText<P> {
    const IS_REQUIRED: bool = true;

    type RawValueType = Self;

    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        P::NAME.into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            pattern: Some(P::PATTERN.to_owned()),
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl<P> std::ops::Deref for HeaderText<P> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<P: HeaderPattern> ParseFromParameter for HeaderText<P> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(Self(value.to_owned(), PhantomData))
    }
}

/// Reads an `If-Match` / `If-None-Match` value: `*` or a list of entity tags.
///
/// Weak tags (`W/"3"`) take part only where weak comparison applies
/// (`If-None-Match`); tags that are no revision of ours match nothing. A
/// value that is no list of entity tags (most often a tag without its
/// quotes, `15` for `"15"`) is refused, 400, saying so: matching nothing
/// would fail the request for a reason the client cannot see, and ignoring
/// it would drop the condition. `name` is the header's.
pub fn parse_etags(
    name: &str,
    header: &str,
    weak_allowed: bool,
) -> Result<Revisions, Box<Problem>> {
    let mut rest = header.trim();
    if rest == "*" {
        return Ok(Revisions::Any);
    }
    let mut revisions = Vec::new();
    while !rest.is_empty() {
        let (weak, after) = match rest.strip_prefix("W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        let quoted = after
            .strip_prefix('"')
            .and_then(|inside| inside.split_once('"'));
        let Some((tag, after)) = quoted else {
            let token = rest.split(',').next().unwrap_or(rest).trim();
            return Err(unquoted(name, token));
        };
        if (!weak || weak_allowed)
            && let Ok(revision) = tag.parse()
        {
            revisions.push(revision);
        }
        rest = after.trim_start();
        if rest.is_empty() {
            break;
        }
        // A comma, then another tag.
        match rest.strip_prefix(',').map(str::trim_start) {
            Some(next) if !next.is_empty() => rest = next,
            _ => {
                let token = rest.split(',').next().unwrap_or(rest).trim();
                return Err(unquoted(name, token));
            }
        }
    }
    Ok(Revisions::OneOf(revisions))
}

/// A value that is no entity tag, and how to send it.
fn unquoted(name: &str, token: &str) -> Box<Problem> {
    Problem::invalid_request(format!(
        "{name}: entity tag {} is not in quotes; send \"{}\" (an ETag is a revision in \
         double quotes, as the ETag header gives it)",
        shown(token),
        shown(token.trim_start_matches("W/").trim_matches('"'))
    ))
    .into()
}

/// A conditional header's value; an empty one counts as absent (it names no
/// entity tag, so it is no condition).
pub fn given(header: Option<&str>) -> Option<&str> {
    header.filter(|value| !value.trim().is_empty())
}

/// The condition a write's `If-Match` / `If-None-Match` headers set.
pub fn write_condition(
    if_match: Option<&str>,
    if_none_match: Option<&str>,
) -> Result<Condition, Box<Problem>> {
    let (if_match, if_none_match) = (given(if_match), given(if_none_match));
    if if_match.is_none() && if_none_match.is_none() {
        return Ok(Condition::Always);
    }
    Ok(Condition::Revision {
        must: if_match
            .map(|header| parse_etags("If-Match", header, false))
            .transpose()?,
        // For methods other than GET and HEAD, If-None-Match compares weakly
        // too, and a match fails the request.
        must_not: if_none_match
            .map(|header| parse_etags("If-None-Match", header, true))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(header: &str, weak: bool) -> Option<Revisions> {
        parse_etags("If-Match", header, weak).ok()
    }

    #[test]
    fn parses_lists_stars_and_weak_tags() {
        assert_eq!(parsed("*", false), Some(Revisions::Any));
        assert_eq!(
            parsed("\"3\", W/\"5\" ,\"x\", \"7\"", false),
            Some(Revisions::OneOf(vec![3, 7]))
        );
        assert_eq!(parsed("W/\"5\"", true), Some(Revisions::OneOf(vec![5])));
        // A comma inside a tag is the tag's.
        assert_eq!(
            parsed("\"p;*l\", W/\"*,5\", \"8\"", true),
            Some(Revisions::OneOf(vec![8]))
        );
    }

    #[test]
    fn the_declared_pattern_takes_what_the_parser_takes() {
        let pattern = regex_lite::Regex::new(ETAGS_PATTERN).expect("a regex");
        for header in [
            "*",
            "\"1\"",
            " \"1\" , W/\"2\"",
            "\"a,b\"",
            "",
            "15",
            "W/15",
            "\"1\" \"2\"",
            "*, \"1\"",
            "\"",
            "W/\"x\",",
            "\"1\",,\"2\"",
        ] {
            assert_eq!(
                pattern.is_match(header),
                parse_etags("If-Match", header, true).is_ok(),
                "{header:?}"
            );
        }
    }

    #[test]
    fn an_unquoted_tag_is_refused_saying_how_to_send_it() {
        for header in [
            "15",
            "\"3\", 15",
            "W/15",
            "garbage",
            "\"15",
            "\"1\" \"2\"",
            "*, \"1\"",
        ] {
            assert_eq!(parsed(header, true), None, "{header}");
        }
        let refused = parse_etags("If-None-Match", "15", true).err();
        assert_eq!(
            refused.map(|problem| problem.detail),
            Some(
                "If-None-Match: entity tag 15 is not in quotes; send \"15\" (an ETag is a \
                 revision in double quotes, as the ETag header gives it)"
                    .to_owned()
            )
        );
    }
}
