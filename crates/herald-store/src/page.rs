//! Keyset pagination: lists are ordered newest first by `(created_at, id)` and a page continues
//! strictly after the last row of the previous one, so rows inserted meanwhile never shift pages.

use serde::{Deserialize, Serialize};

/// Where a page starts: just after the row with this sort key and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub at: i64,
    pub id: String,
}

#[derive(Debug, Clone)]
pub struct PageRequest {
    pub limit: i64,
    pub after: Option<Cursor>,
}

impl PageRequest {
    pub fn first(limit: i64) -> Self {
        Self { limit, after: None }
    }

    /// The `(at, id)` values to bind to [`keyset_condition`]'s two parameters. Without a cursor
    /// they sort after every row, so one SQL text serves the first page and the next ones.
    pub fn bounds(&self) -> (i64, String) {
        match &self.after {
            Some(cursor) => (cursor.at, cursor.id.clone()),
            None => (i64::MAX, String::new()),
        }
    }
}

/// The newest-first keyset condition on columns `at_col`, `id_col`, with the bounds of
/// [`PageRequest::bounds`] bound as parameters `$a` and `$b`. Order by `at_col DESC, id_col DESC`.
pub fn keyset_condition(at_col: &str, id_col: &str, a: usize, b: usize) -> String {
    format!("({at_col} < ${a} OR ({at_col} = ${a} AND {id_col} < ${b}))")
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched newest first; `key` gives a row's cursor.
    pub fn from_rows(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> Cursor) -> Self {
        let limit = limit.max(0) as usize;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(&key)
        } else {
            None
        };
        Self { items: rows, next }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}
