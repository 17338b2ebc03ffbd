//! Paging as Cloud KMS lists do it: `pageSize` / `pageToken` in, `nextPageToken` / `totalSize`
//! out. Tokens are opaque to clients and carry a checksum of the query they belong to, so a
//! token reused with another filter is refused instead of skipping results. Two kinds:
//!
//! * keyset tokens ([`KeysetCursor`]): the last item's place in the list's own order, so the
//!   database starts the next page there, whatever the page's position (lists in their natural
//!   order, issue 18);
//! * offset tokens ([`PageRequest::apply`]): a place in a list sorted in memory (`orderBy`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The largest page the server returns, whatever `pageSize` asks for.
pub const MAX_PAGE_SIZE: usize = 1000;

/// A page request.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// Requested size; 0 means the server's default ([`MAX_PAGE_SIZE`]).
    pub page_size: i64,
    /// Token from a previous response, or empty.
    pub page_token: String,
}

/// Why a page request is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PageError {
    /// `pageSize` is negative.
    #[error("page_size must not be negative")]
    NegativeSize,
    /// The token is not one this server issued for this query.
    #[error("Invalid page token. Use the nextPageToken of the previous response with the same parameters.")]
    BadToken,
}

/// One page cut from a complete, filtered, ordered list.
#[derive(Debug)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Empty on the last page.
    pub next_page_token: String,
    /// Size of the whole list.
    pub total_size: i32,
}

fn query_tag(query: &str) -> u32 {
    keyhold_crypto::crc32c(query.as_bytes())
}

fn encode(offset: usize, query: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{offset}.{}", query_tag(query)))
}

fn decode(token: &str, query: &str) -> Option<usize> {
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (offset, tag) = s.split_once('.')?;
    (tag.parse::<u32>().ok()? == query_tag(query)).then_some(())?;
    offset.parse().ok()
}

/// Where a keyset page starts: after the item whose key (a resource name, or a version ID) is
/// `after`, in the list's own order. `total` is the list's size as the first page counted it,
/// for lists whose size is not a cheap count (filtered ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysetCursor {
    /// The last item of the previous page.
    pub after: String,
    /// The size reported with the first page, if carried.
    pub total: Option<i32>,
}

impl KeysetCursor {
    /// The token that continues `query` after this cursor.
    pub fn token(&self, query: &str) -> String {
        let total = self.total.map(|t| t.to_string()).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(format!("k{total}.{}.{}", query_tag(query), self.after))
    }

    fn decode(token: &str, query: &str) -> Option<KeysetCursor> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
        let mut parts = raw.strip_prefix('k')?.splitn(3, '.');
        let (total, tag, after) = (parts.next()?, parts.next()?, parts.next()?);
        (tag.parse::<u32>().ok()? == query_tag(query)).then_some(())?;
        let total = if total.is_empty() { None } else { Some(total.parse().ok().filter(|t: &i32| *t >= 0)?) };
        Some(KeysetCursor { after: after.to_string(), total })
    }
}

impl PageRequest {
    /// The page's size: `pageSize`, or [`MAX_PAGE_SIZE`] when 0 or larger.
    pub fn size(&self) -> Result<usize, PageError> {
        match self.page_size {
            n if n < 0 => Err(PageError::NegativeSize),
            0 => Ok(MAX_PAGE_SIZE),
            n => Ok((n as usize).min(MAX_PAGE_SIZE)),
        }
    }

    /// Where a keyset page of `query` starts: `None` for the first page.
    pub fn keyset_cursor(&self, query: &str) -> Result<Option<KeysetCursor>, PageError> {
        self.size()?;
        if self.page_token.is_empty() {
            return Ok(None);
        }
        KeysetCursor::decode(&self.page_token, query).map(Some).ok_or(PageError::BadToken)
    }

    /// Cuts the page out of `all`. `query` identifies the list (parent, filter, order) so tokens
    /// cannot be replayed against a different one.
    pub fn apply<T>(&self, all: Vec<T>, query: &str) -> Result<Page<T>, PageError> {
        let size = self.size()?;
        let offset =
            if self.page_token.is_empty() { 0 } else { decode(&self.page_token, query).ok_or(PageError::BadToken)? };
        let total = all.len();
        if offset > total {
            return Err(PageError::BadToken);
        }
        let end = offset.saturating_add(size).min(total);
        let items: Vec<T> = all.into_iter().skip(offset).take(end - offset).collect();
        let next_page_token = if end < total { encode(end, query) } else { String::new() };
        Ok(Page { items, next_page_token, total_size: i32::try_from(total).unwrap_or(i32::MAX) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_through_everything_once() {
        let all: Vec<u32> = (0..25).collect();
        let mut req = PageRequest { page_size: 10, page_token: String::new() };
        let mut seen = Vec::new();
        loop {
            let p = req.apply(all.clone(), "q").unwrap();
            assert_eq!(p.total_size, 25);
            seen.extend(p.items);
            if p.next_page_token.is_empty() {
                break;
            }
            req.page_token = p.next_page_token;
        }
        assert_eq!(seen, all);
    }

    #[test]
    fn keyset_tokens_round_trip_and_belong_to_their_query() {
        for cursor in [
            KeysetCursor { after: "projects/p/locations/l/keyRings/r/cryptoKeys/a.b".into(), total: None },
            KeysetCursor { after: "17".into(), total: Some(250) },
        ] {
            let token = cursor.token("q");
            let req = PageRequest { page_size: 5, page_token: token.clone() };
            assert_eq!(req.keyset_cursor("q").unwrap(), Some(cursor));
            assert_eq!(req.keyset_cursor("other").unwrap_err(), PageError::BadToken);
            // An offset token is not a keyset token, nor the reverse.
            assert_eq!(req.apply(vec![1, 2], "q").unwrap_err(), PageError::BadToken);
        }
        let offset = PageRequest { page_size: 1, page_token: String::new() }.apply(vec![1, 2], "q").unwrap();
        let req = PageRequest { page_size: 1, page_token: offset.next_page_token };
        assert_eq!(req.keyset_cursor("q").unwrap_err(), PageError::BadToken);
        assert_eq!(PageRequest::default().keyset_cursor("q").unwrap(), None);
        let negative = URL_SAFE_NO_PAD.encode(format!("k-3.{}.x", query_tag("q")));
        assert_eq!(
            PageRequest { page_size: 1, page_token: negative }.keyset_cursor("q").unwrap_err(),
            PageError::BadToken
        );
    }

    #[test]
    fn bad_tokens() {
        let p = PageRequest { page_size: 1, page_token: String::new() }.apply(vec![1, 2], "q").unwrap();
        let other = PageRequest { page_size: 1, page_token: p.next_page_token.clone() };
        assert_eq!(other.apply(vec![1, 2], "other").unwrap_err(), PageError::BadToken);
        let junk = PageRequest { page_size: 1, page_token: "!!".into() };
        assert_eq!(junk.apply(vec![1], "q").unwrap_err(), PageError::BadToken);
        let neg = PageRequest { page_size: -1, page_token: String::new() };
        assert_eq!(neg.apply(vec![1], "q").unwrap_err(), PageError::NegativeSize);
    }
}
