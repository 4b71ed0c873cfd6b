//! `If-Fence`: a write that applies only while a lock (or an election) is
//! held with a given fencing token, judged in the write's own commit.

use poem::Request;
use poem::http::HeaderName;

use super::Problem;
use super::conditional::{HeaderPattern, HeaderText};
use super::shown;
use crate::domain::Fence;

/// The header a fenced write carries.
pub const IF_FENCE: HeaderName = HeaderName::from_static("if-fence");

/// `NAME=TOKEN`: a lock's (or an election's) name, and the token its
/// acquisition answered (empty: no fence, as an empty `If-Match` is no
/// condition). Names are declared as visible ASCII, what a header carries.
pub struct FencePattern;

impl HeaderPattern for FencePattern {
    const NAME: &'static str = "string(fence)";
    const PATTERN: &'static str = "^([!-~]+=[1-9][0-9]{0,18})?$";
}

pub type FenceHeader = HeaderText<FencePattern>;

/// The request's `If-Fence` value, if it has one: 400 if it has several,
/// or one that is not text (which poem's header parameter would take for
/// none at all).
pub fn fence_header(req: &Request) -> Result<Option<&str>, Box<Problem>> {
    let mut values = req.headers().get_all(IF_FENCE).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(Problem::invalid_request(
            "the request has several If-Fence headers; send one",
        )
        .into()),
        (Some(value), None) => value.to_str().map(Some).map_err(|_| {
            Problem::invalid_request(
                "If-Fence is not text: send NAME=TOKEN in visible ASCII, e.g. `If-Fence: jobs=42`",
            )
            .into()
        }),
    }
}

/// The largest token a request may name: the spec's `maximum` as its JSON
/// writes it, 9.223372036854776e18 (poem-openapi keeps bounds as floats),
/// read as the decimal it says. Revisions are etcd's signed 64-bit
/// numbers, so no lock holds a token past 2^63 - 1: one up to this bound is
/// judged (and lost), one past it is 400, as the spec says.
pub const MAX_TOKEN: u64 = 9_223_372_036_854_776_000;

/// A token or a term from a request, checked against [`MAX_TOKEN`].
pub fn checked_token(token: u64) -> Result<u64, Box<Problem>> {
    if token > MAX_TOKEN {
        return Err(Problem::invalid_request(format!(
            "token {token} is past the largest, {MAX_TOKEN}"
        ))
        .into());
    }
    Ok(token)
}

/// Reads an `If-Fence` value. The token is after the last `=`, so a name
/// may hold one.
pub fn parse_fence(header: &str) -> Result<Fence, Box<Problem>> {
    let header = header.trim();
    let parsed = header
        .rsplit_once('=')
        .filter(|(name, _)| !name.is_empty())
        .and_then(|(name, token)| {
            // A token past any revision is no error: no lock holds it.
            let token: u64 = token.parse().ok().filter(|token| *token > 0)?;
            Some(Fence {
                name: name.into(),
                token,
            })
        });
    parsed.ok_or_else(|| {
        Problem::invalid_request(format!(
            "If-Fence: {} is not NAME=TOKEN; send the lock's name and the token its \
             acquisition answered, e.g. `If-Fence: jobs=42`",
            shown(header)
        ))
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_reads_name_and_token() {
        let fence = parse_fence(" a=b=42 ").expect("a fence");
        assert_eq!((&*fence.name, fence.token), ("a=b", 42));
        for bad in ["", "=42", "jobs", "jobs=", "jobs=0", "jobs=-1", "jobs=x"] {
            assert!(parse_fence(bad).is_err(), "{bad:?}");
        }
    }
}
