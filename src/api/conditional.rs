//! HTTP conditional requests (RFC 9110): ETags and the If-* headers.

use super::{Problem, shown};
use crate::domain::{Condition, Revisions};

/// A key's ETag: its `mod_revision`, quoted.
pub fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

/// Reads an `If-Match` / `If-None-Match` value: `*` or a list of entity tags.
///
/// Weak tags (`W/"3"`) take part only where weak comparison applies
/// (`If-None-Match`); tags that are no revision of ours match nothing. A
/// tag without its quotes (`15` for `"15"`) is refused, 400, saying so:
/// matching nothing would fail the request for a reason the client cannot
/// see, and ignoring it would drop the condition. `name` is the header's.
pub fn parse_etags(
    name: &str,
    header: &str,
    weak_allowed: bool,
) -> Result<Revisions, Box<Problem>> {
    if header.trim() == "*" {
        return Ok(Revisions::Any);
    }
    let mut revisions = Vec::new();
    for tag in header.split(',').map(str::trim) {
        let (weak, opaque) = match tag.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, tag),
        };
        let Some(quoted) = opaque
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
        else {
            return Err(Problem::invalid_request(format!(
                "{name}: entity tag {} is not in quotes; send \"{}\" (an ETag is a revision \
                 in double quotes, as the ETag header gives it)",
                shown(tag),
                shown(tag.trim_matches('"'))
            ))
            .into());
        };
        if weak && !weak_allowed {
            continue;
        }
        if let Ok(revision) = quoted.parse() {
            revisions.push(revision);
        }
    }
    Ok(Revisions::OneOf(revisions))
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
    }

    #[test]
    fn an_unquoted_tag_is_refused_saying_how_to_send_it() {
        for header in ["15", "\"3\", 15", "W/15", "garbage", "\"15"] {
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
