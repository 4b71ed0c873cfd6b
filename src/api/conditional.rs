//! HTTP conditional requests (RFC 9110): ETags and the If-* headers.

use crate::domain::{Condition, Revisions};

/// A key's ETag: its `mod_revision`, quoted.
pub fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

/// Reads an `If-Match` / `If-None-Match` value: `*` or a list of entity tags.
///
/// Weak tags (`W/"3"`) take part only where weak comparison applies
/// (`If-None-Match`); tags that are no revision of ours match nothing.
pub fn parse_etags(header: &str, weak_allowed: bool) -> Revisions {
    if header.trim() == "*" {
        return Revisions::Any;
    }
    let revisions = header
        .split(',')
        .filter_map(|tag| {
            let tag = tag.trim();
            let tag = match tag.strip_prefix("W/") {
                Some(weak) if weak_allowed => weak,
                Some(_) => return None,
                None => tag,
            };
            tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
        })
        .collect();
    Revisions::OneOf(revisions)
}

/// A conditional header's value; an empty one counts as absent (it names no
/// entity tag, so it is no condition).
pub fn given(header: Option<&str>) -> Option<&str> {
    header.filter(|value| !value.trim().is_empty())
}

/// The condition a write's `If-Match` / `If-None-Match` headers set.
pub fn write_condition(if_match: Option<&str>, if_none_match: Option<&str>) -> Condition {
    let (if_match, if_none_match) = (given(if_match), given(if_none_match));
    if if_match.is_none() && if_none_match.is_none() {
        return Condition::Always;
    }
    Condition::Revision {
        must: if_match.map(|header| parse_etags(header, false)),
        // For methods other than GET and HEAD, If-None-Match compares weakly
        // too, and a match fails the request.
        must_not: if_none_match.map(|header| parse_etags(header, true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_stars_and_weak_tags() {
        assert_eq!(parse_etags("*", false), Revisions::Any);
        assert_eq!(
            parse_etags("\"3\", W/\"5\" ,\"x\", \"7\"", false),
            Revisions::OneOf(vec![3, 7])
        );
        assert_eq!(parse_etags("W/\"5\"", true), Revisions::OneOf(vec![5]));
        assert_eq!(parse_etags("garbage", true), Revisions::OneOf(vec![]));
    }
}
