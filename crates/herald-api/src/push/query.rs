//! The query parameters of the Push API's list endpoints, read one way everywhere.
//!
//! Every list takes its filters plus `pageSize` / `pageToken` (read by
//! `crate::pagination::ListQuery`). A parameter that is neither → 400 code 20001 with `context`
//! = its name, one entry per unknown parameter, so a typo such as `operationID` never returns an
//! unfiltered list (as unknown fields in JSON bodies are refused). An empty value counts as
//! absent. `startDate` / `endDate` are inclusive bounds on `createdAt` (see `date_range`).
//! Decisions: `docs/api.md`, `docs/decisions/credentials.md`, `docs/decisions/send.md`.

use std::collections::HashMap;

use herald_core::time::parse_rfc3339;

use crate::errors::{FieldErrors, PushError};

/// The parameters every list takes besides its filters.
const PAGE_PARAMS: &[&str] = &["pageSize", "pageToken"];

/// The query string of a list as a map (a later repeat of a name wins), after refusing every
/// parameter that is neither one of `filters` nor `pageSize` / `pageToken`. Unparsable → 400.
pub(super) fn list_params(
    raw: Option<String>,
    filters: &[&str],
) -> Result<HashMap<String, String>, PushError> {
    let query = query_map(raw)?;
    deny_unknown(&query, filters)?;
    Ok(query)
}

/// The query string as a map (a later repeat of a name wins); unparsable → 400.
fn query_map(raw: Option<String>) -> Result<HashMap<String, String>, PushError> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(&raw.unwrap_or_default())
        .map(|pairs| pairs.into_iter().collect())
        .map_err(|error| PushError::invalid("query", format!("malformed query string: {error}")))
}

/// One 400 entry per query parameter that is neither one of `filters` nor a page parameter,
/// naming the allowed ones.
fn deny_unknown(query: &HashMap<String, String>, filters: &[&str]) -> Result<(), PushError> {
    let mut unknown: Vec<&str> = query
        .keys()
        .map(String::as_str)
        .filter(|name| !filters.contains(name) && !PAGE_PARAMS.contains(name))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort_unstable();
    let allowed = filters
        .iter()
        .chain(PAGE_PARAMS)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    let mut errors = FieldErrors::new();
    for name in unknown {
        errors.add(
            name,
            format!("unknown query parameter {name:?}; allowed: {allowed}"),
        );
    }
    errors.finish(())
}

/// A non-empty query parameter.
pub(super) fn param<'q>(query: &'q HashMap<String, String>, name: &str) -> Option<&'q str> {
    query
        .get(name)
        .map(String::as_str)
        .filter(|text| !text.is_empty())
}

/// `name=true|false`.
pub(super) fn bool_param(
    query: &HashMap<String, String>,
    name: &str,
) -> Result<Option<bool>, PushError> {
    match param(query, name) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(PushError::invalid(
            name,
            format!("{name} must be true or false"),
        )),
    }
}

/// `status`: one of `allowed`.
pub(super) fn status_param(
    query: &HashMap<String, String>,
    allowed: &[&str],
) -> Result<Option<String>, PushError> {
    match param(query, "status") {
        None => Ok(None),
        Some(status) if allowed.contains(&status) => Ok(Some(status.to_owned())),
        Some(_) => Err(PushError::invalid(
            "status",
            format!("status must be one of {}", allowed.join(", ")),
        )),
    }
}

/// `startDate` / `endDate` as inclusive epoch-millisecond bounds on `createdAt`. Either an
/// RFC 3339 time (any offset) or a date (`2026-05-01`: from the start of that day UTC for
/// `startDate`, to its last millisecond for `endDate`). Times are shown with second precision, so
/// an `endDate` without fractional seconds includes its whole second: the `createdAt` of a
/// resource, used as `endDate`, includes that resource. `endDate` before `startDate` → 400.
pub(super) fn date_range(
    query: &HashMap<String, String>,
) -> Result<(Option<i64>, Option<i64>), PushError> {
    let from = date_param(query, "startDate", false)?;
    let until = date_param(query, "endDate", true)?;
    if let (Some(from), Some(until)) = (from, until)
        && until < from
    {
        return Err(PushError::invalid(
            "endDate",
            "endDate must not be before startDate",
        ));
    }
    Ok((from, until))
}

fn date_param(
    query: &HashMap<String, String>,
    name: &str,
    end: bool,
) -> Result<Option<i64>, PushError> {
    let Some(text) = param(query, name) else {
        return Ok(None);
    };
    if let Some(at) = parse_rfc3339(text) {
        // `parse_rfc3339` keeps milliseconds; a fraction below them is cut, so look at the text.
        let whole_second = end && !text.contains('.') && at.rem_euclid(1000) == 0;
        return Ok(Some(if whole_second { at + 999 } else { at }));
    }
    let is_date = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if is_date && let Some(start) = parse_rfc3339(&format!("{text}T00:00:00Z")) {
        return Ok(Some(if end { start + 86_400_000 - 1 } else { start }));
    }
    Err(PushError::invalid(
        name,
        format!(
            "{name} must be an RFC 3339 time such as 2026-05-01T09:00:00Z, or a date such as \
             2026-05-01"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn unknown_parameters_are_refused_one_entry_each() {
        let raw = Some("pageSize=5&operationID=x&status=SENT&zz=1".to_owned());
        let error = list_params(raw, &["operationId", "status"]).unwrap_err();
        let contexts: Vec<_> = error
            .errors
            .iter()
            .map(|e| e.context.clone().unwrap())
            .collect();
        assert_eq!(contexts, ["operationID", "zz"]);
        assert!(
            error.errors[0]
                .message
                .contains("allowed: operationId, status, pageSize, pageToken")
        );
        assert!(list_params(Some("pageToken=&status=SENT".into()), &["status"]).is_ok());
        assert!(list_params(None, &[]).is_ok());
    }

    #[test]
    fn end_date_includes_its_whole_second_and_dates_their_whole_day() {
        let at = parse_rfc3339("2026-05-01T09:00:00Z").unwrap();
        let day = parse_rfc3339("2026-05-01T00:00:00Z").unwrap();
        let range = |pairs: &[(&str, &str)]| date_range(&query(pairs)).unwrap();
        assert_eq!(
            range(&[
                ("startDate", "2026-05-01T09:00:00Z"),
                ("endDate", "2026-05-01T09:00:00Z")
            ]),
            (Some(at), Some(at + 999))
        );
        assert_eq!(
            range(&[("endDate", "2026-05-01T09:00:00.000Z")]),
            (None, Some(at))
        );
        assert_eq!(
            range(&[("startDate", "2026-05-01"), ("endDate", "2026-05-01")]),
            (Some(day), Some(day + 86_400_000 - 1))
        );
        assert_eq!(range(&[("startDate", ""), ("endDate", "")]), (None, None));
        for (pairs, context) in [
            (&[("startDate", "soon")][..], "startDate"),
            (&[("endDate", "2026-13-01")][..], "endDate"),
            (
                &[("startDate", "2026-05-02"), ("endDate", "2026-05-01")][..],
                "endDate",
            ),
        ] {
            let error = date_range(&query(pairs)).unwrap_err();
            assert_eq!(error.errors[0].context.as_deref(), Some(context));
        }
    }
}
