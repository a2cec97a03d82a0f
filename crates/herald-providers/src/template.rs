//! A JSON body rendered once with a placeholder where the device token goes, so each request only
//! copies bytes around the token.

use bytes::Bytes;
use serde_json::Value;

#[derive(Debug, Clone)]
pub(crate) struct TokenTemplate {
    prefix: Bytes,
    suffix: Bytes,
    /// False when the rendered body does not contain the token (an override replaced it).
    has_token: bool,
}

impl TokenTemplate {
    /// Renders `render(placeholder)` and splits it at the placeholder string.
    pub(crate) fn build(render: impl FnOnce(&str) -> Value) -> Result<Self, String> {
        let placeholder = format!("\u{0}herald-device-token-{}\u{0}", uuid::Uuid::new_v4());
        let body = serde_json::to_vec(&render(&placeholder)).map_err(|e| e.to_string())?;
        let needle = serde_json::to_vec(&Value::String(placeholder)).map_err(|e| e.to_string())?;
        let positions: Vec<usize> = body
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle.as_slice())
            .map(|(i, _)| i)
            .collect();
        match positions.as_slice() {
            [] => Ok(TokenTemplate {
                prefix: Bytes::from(body),
                suffix: Bytes::new(),
                has_token: false,
            }),
            [at] => {
                let body = Bytes::from(body);
                Ok(TokenTemplate {
                    prefix: body.slice(..*at),
                    suffix: body.slice(at + needle.len()..),
                    has_token: true,
                })
            }
            _ => Err("the device token placeholder appears more than once".into()),
        }
    }

    /// The body for one device token.
    pub(crate) fn body(&self, token: &str) -> Bytes {
        if !self.has_token {
            return self.prefix.clone();
        }
        let mut out = Vec::with_capacity(self.prefix.len() + self.suffix.len() + token.len() + 8);
        out.extend_from_slice(&self.prefix);
        serde_json::to_writer(&mut out, token).expect("writing to a Vec does not fail");
        out.extend_from_slice(&self.suffix);
        Bytes::from(out)
    }

    /// The size of the body without the token.
    pub(crate) fn len_without_token(&self) -> usize {
        self.prefix.len() + self.suffix.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_is_spliced_and_escaped() {
        let t =
            TokenTemplate::build(|token| json!({"message": {"token": token, "data": {"a": "b"}}}))
                .unwrap();
        let body = t.body("abc");
        let expected =
            serde_json::to_vec(&json!({"message": {"token": "abc", "data": {"a": "b"}}})).unwrap();
        assert_eq!(&body[..], &expected[..]);
        let odd = t.body("x\"y\\z");
        let parsed: Value = serde_json::from_slice(&odd).unwrap();
        assert_eq!(parsed["message"]["token"], "x\"y\\z");
    }

    #[test]
    fn constant_body_without_token() {
        let t = TokenTemplate::build(|_| json!({"message": {"topic": "news"}})).unwrap();
        assert_eq!(&t.body("abc")[..], br#"{"message":{"topic":"news"}}"#);
    }
}
