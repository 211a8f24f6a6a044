//! Cursor pagination for the JSON API's lists (`?limit=&cursor=`): a page holds at most `limit`
//! items (1–100, 20 by default) and, when there are more, an opaque `next_cursor` to pass back
//! for the next page. Cursors are keyset positions (the last item's sort key), so pages stay
//! stable while new items arrive and page 100 costs what page 1 does.

use base64::Engine;
use serde::Deserialize;

use crate::web::AppError;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// The query of a paginated list.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// How many items to return (1–100, default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page; omit it for the first page.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The page size asked for (422 outside 1–100).
    pub fn limit(&self) -> Result<i64, AppError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
            Some(_) => Err(AppError::Unprocessable(format!("limit: must be between 1 and {MAX_LIMIT}"))),
        }
    }

    /// The position encoded in `cursor` (400 for a cursor we did not give out), parsed by
    /// `parse`.
    pub fn position<T>(&self, parse: impl Fn(&str) -> Option<T>) -> Result<Option<T>, AppError> {
        let Some(cursor) = self.cursor.as_deref().filter(|c| !c.is_empty()) else { return Ok(None) };
        let bad = || AppError::BadRequest("cursor: not a cursor of this list; pass next_cursor as it was given".into());
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        parse(&text).map(Some).ok_or_else(bad)
    }
}

/// The opaque cursor for a position written as text.
pub fn cursor(position: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position.as_bytes())
}

/// Takes one item more than the page size to know whether more follow: returns the page and the
/// cursor of its last item when they do.
pub fn split_page<T>(mut items: Vec<T>, limit: i64, position: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if items.len() > limit {
        items.truncate(limit);
        let next = items.last().map(|last| cursor(&position(last)));
        (items, next)
    } else {
        (items, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_strangers_are_refused() {
        let query = PageQuery { limit: None, cursor: Some(cursor("42")) };
        assert_eq!(query.position(|t| t.parse::<i64>().ok()).expect("ok"), Some(42));
        let bad = PageQuery { limit: Some(0), cursor: Some("!!".into()) };
        assert!(bad.position(|t| t.parse::<i64>().ok()).is_err());
        assert!(bad.limit().is_err());
        assert_eq!(PageQuery::default().limit().expect("default"), DEFAULT_LIMIT);
        let (page, next) = split_page(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!((page, next), (vec![1, 2], Some(cursor("2"))));
        assert_eq!(split_page(vec![1], 2, |n| n.to_string()), (vec![1], None));
    }
}
