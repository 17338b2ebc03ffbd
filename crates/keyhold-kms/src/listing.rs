//! List calls (`keyRings.list`, `cryptoKeys.list`, `cryptoKeyVersions.list`): filtering,
//! ordering and paging.
//!
//! A list in its natural order (no `orderBy`) is paged in the database: the page token holds
//! the last item's key, and the next page is one index range read from there, whatever its
//! position (issue 18, finding 6). A filter is evaluated on each item's JSON as the database
//! hands them over, a batch at a time, until the page is full; the first page of a filtered
//! list also counts every match (for `totalSize`) and carries the count in its token, so the
//! pages after it cost only what they read. With `orderBy` the whole list is sorted in memory
//! and paged by offset, as before.

use keyhold_api::filter::{Filter, OrderBy};
use keyhold_api::page::{KeysetCursor, Page, PageError};
use serde::Serialize;

use crate::error::KmsError;
use crate::keys::ListQuery;

/// How many items a filtered list reads from the database at a time.
const FILTERED_BATCH: usize = 500;

/// A list the database reads in order: items with their keys (what the next page starts
/// after), and the list's size.
pub(crate) trait Listing {
    /// What the list returns.
    type Item: Serialize;
    /// Up to `limit` items after the one keyed `after` ("" for the first), each with its key.
    async fn fetch(&self, after: &str, limit: usize) -> Result<Vec<(String, Self::Item)>, KmsError>;
    /// How many items the list has (unfiltered).
    async fn count(&self) -> Result<i64, KmsError>;
}

fn page_error(e: PageError) -> KmsError {
    match e {
        PageError::NegativeSize => KmsError::InvalidArgument("page_size must not be negative.".into()),
        other => KmsError::InvalidArgument(other.to_string()),
    }
}

fn matches<T: Serialize>(filter: &Filter, item: &T) -> Result<bool, KmsError> {
    if matches!(filter, Filter::All) {
        return Ok(true);
    }
    let json = serde_json::to_value(item).map_err(|e| KmsError::Internal(e.to_string()))?;
    Ok(filter.matches(&json))
}

/// One page of `listing` under `parent` as `q` asks.
pub(crate) async fn page<L: Listing>(listing: &L, q: &ListQuery, parent: &str) -> Result<Page<L::Item>, KmsError> {
    let filter = Filter::parse(&q.filter).map_err(|e| KmsError::InvalidArgument(format!("Invalid filter: {e}")))?;
    let order = OrderBy::parse(&q.order_by).map_err(|e| KmsError::InvalidArgument(e.to_string()))?;
    let query = format!("{parent}\n{}\n{}", q.filter, q.order_by);
    if order.is_some() {
        return sorted_page(listing, q, parent).await;
    }
    let size = q.page.size().map_err(page_error)?;
    let start = q.page.keyset_cursor(&query).map_err(page_error)?;
    let unfiltered = matches!(filter, Filter::All);
    let batch = if unfiltered { size + 1 } else { FILTERED_BATCH.max(size + 1) };

    // The page, and one match beyond it (which says there is a next page).
    let mut after = start.as_ref().map(|c| c.after.clone()).unwrap_or_default();
    let mut found: Vec<(String, L::Item)> = Vec::with_capacity(size + 1);
    let mut exhausted = false;
    while found.len() <= size && !exhausted {
        let rows = listing.fetch(&after, batch).await?;
        exhausted = rows.len() < batch;
        for (key, item) in rows {
            after.clone_from(&key);
            if matches(&filter, &item)? {
                found.push((key, item));
                if found.len() > size {
                    break;
                }
            }
        }
    }
    let more = found.len() > size;

    let total = match (&start, unfiltered) {
        (_, true) => listing.count().await?,
        (Some(KeysetCursor { total: Some(total), .. }), false) => i64::from(*total),
        (Some(KeysetCursor { total: None, .. }), false) => {
            count_matches(listing, &filter, String::new(), batch).await?
        }
        // The first page of a filtered list: what it found, and every match after it.
        (None, false) if more => found.len() as i64 + count_matches(listing, &filter, after, batch).await?,
        (None, false) => found.len() as i64,
    };
    let total = i32::try_from(total).unwrap_or(i32::MAX);
    found.truncate(size);
    let next_page_token = match found.last() {
        Some((key, _)) if more => {
            KeysetCursor { after: key.clone(), total: (!unfiltered).then_some(total) }.token(&query)
        }
        _ => String::new(),
    };
    Ok(Page { items: found.into_iter().map(|(_, item)| item).collect(), next_page_token, total_size: total })
}

/// How many items after `after` match `filter`.
async fn count_matches<L: Listing>(
    listing: &L,
    filter: &Filter,
    mut after: String,
    batch: usize,
) -> Result<i64, KmsError> {
    let mut count = 0;
    loop {
        let rows = listing.fetch(&after, batch).await?;
        let exhausted = rows.len() < batch;
        for (key, item) in rows {
            after = key;
            count += i64::from(matches(filter, &item)?);
        }
        if exhausted {
            return Ok(count);
        }
    }
}

/// A page of the whole list sorted by `order` (offset tokens).
async fn sorted_page<L: Listing>(listing: &L, q: &ListQuery, parent: &str) -> Result<Page<L::Item>, KmsError> {
    let all = listing.fetch("", usize::MAX).await?;
    in_memory_page(all.into_iter().map(|(_, item)| item).collect(), q, parent)
}

/// Filters, orders and pages a complete list held in memory (offset tokens): the locations,
/// and lists with an `orderBy`.
pub(crate) fn in_memory_page<T: Serialize>(all: Vec<T>, q: &ListQuery, parent: &str) -> Result<Page<T>, KmsError> {
    let filter = Filter::parse(&q.filter).map_err(|e| KmsError::InvalidArgument(format!("Invalid filter: {e}")))?;
    let order = OrderBy::parse(&q.order_by).map_err(|e| KmsError::InvalidArgument(e.to_string()))?;
    let mut rows: Vec<(serde_json::Value, T)> = Vec::with_capacity(all.len());
    for item in all {
        let json = serde_json::to_value(&item).map_err(|e| KmsError::Internal(e.to_string()))?;
        if filter.matches(&json) {
            rows.push((json, item));
        }
    }
    if let Some(order) = order {
        order.sort(&mut rows);
    }
    let query = format!("{parent}\n{}\n{}", q.filter, q.order_by);
    q.page.apply(rows.into_iter().map(|(_, t)| t).collect(), &query).map_err(page_error)
}
