//! Liquid templates in `content.title` / `content.body`.
//!
//! The dialect is Liquid with its standard filters and the tags that cannot loop or reach
//! outside the text: `assign`, `capture`, `if`/`unless`/`case`, `increment`/`decrement`, `raw`,
//! `comment`. There is no `for`, `tablerow` or `cycle` (a range loop would let one request make
//! megabytes of text per recipient) and no `include`/`render` (no filesystem, no partials).
//! A variable a recipient lacks renders as empty text instead of failing the render.

use std::fmt;
use std::sync::OnceLock;

use liquid::model::{DisplayCow, KStringCow, State, Value as LiquidValue};
use liquid::{Object, ObjectView, ValueView};
use liquid_lib::stdlib;
use serde_json::{Map, Value};

fn parser() -> &'static liquid::Parser {
    static PARSER: OnceLock<liquid::Parser> = OnceLock::new();
    PARSER.get_or_init(|| {
        liquid::ParserBuilder::new()
            .tag(stdlib::AssignTag)
            .tag(stdlib::IncrementTag)
            .tag(stdlib::DecrementTag)
            .block(stdlib::RawBlock)
            .block(stdlib::IfBlock)
            .block(stdlib::UnlessBlock)
            .block(stdlib::CommentBlock)
            .block(stdlib::CaptureBlock)
            .block(stdlib::CaseBlock)
            .filter(stdlib::Abs)
            .filter(stdlib::Append)
            .filter(stdlib::AtLeast)
            .filter(stdlib::AtMost)
            .filter(stdlib::Capitalize)
            .filter(stdlib::Ceil)
            .filter(stdlib::Date)
            .filter(stdlib::Default)
            .filter(stdlib::DividedBy)
            .filter(stdlib::Downcase)
            .filter(stdlib::Escape)
            .filter(stdlib::EscapeOnce)
            .filter(stdlib::Floor)
            .filter(stdlib::Lstrip)
            .filter(stdlib::Minus)
            .filter(stdlib::Modulo)
            .filter(stdlib::NewlineToBr)
            .filter(stdlib::Plus)
            .filter(stdlib::Prepend)
            .filter(stdlib::Remove)
            .filter(stdlib::RemoveFirst)
            .filter(stdlib::Replace)
            .filter(stdlib::ReplaceFirst)
            .filter(stdlib::Round)
            .filter(stdlib::Rstrip)
            .filter(stdlib::Size)
            .filter(stdlib::Slice)
            .filter(stdlib::Split)
            .filter(stdlib::Strip)
            .filter(stdlib::StripHtml)
            .filter(stdlib::StripNewlines)
            .filter(stdlib::Times)
            .filter(stdlib::Truncate)
            .filter(stdlib::TruncateWords)
            .filter(stdlib::Upcase)
            .filter(stdlib::UrlDecode)
            .filter(stdlib::UrlEncode)
            .build()
            .expect("the Liquid parser's configuration is valid")
    })
}

/// Whether `text` holds Liquid markup (`{{ ... }}` or `{% ... %}`), i.e. must be rendered.
pub fn has_markup(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

/// Checks that `template` parses. `Err` is a message for the user (the Liquid error, without
/// the template's text quoted back in full). Whether it renders depends on the variables (a
/// `plus` filter needs a number): see [`try_render`].
pub fn check_template(template: &str) -> Result<(), String> {
    // Text without markup is one literal to Liquid and always parses; the parser costs a
    // noticeable part of each send request's CPU (test: `text_without_markup_always_parses`).
    if !has_markup(template) {
        return Ok(());
    }
    parser()
        .parse(template)
        .map(|_| ())
        .map_err(|e| format!("template does not parse: {}", first_line(&e.to_string())))
}

/// Renders `template` with a recipient's `variables` (string values). A variable the recipient
/// lacks renders as empty text. `Err` when the template does not parse or a filter fails on
/// these values (e.g. `plus` on a non-number).
pub fn try_render(template: &str, variables: &Map<String, Value>) -> Result<String, String> {
    if !has_markup(template) {
        return Ok(template.to_owned());
    }
    let parsed = parser()
        .parse(template)
        .map_err(|e| format!("template does not parse: {}", first_line(&e.to_string())))?;
    parsed.render(&Lenient::new(variables)).map_err(|e| {
        format!(
            "template cannot be rendered: {}",
            first_line(&e.to_string())
        )
    })
}

/// Renders `template` with a recipient's `variables`; never fails: when these values make a
/// filter fail, the template is rendered without variables, and when that fails too, the text is
/// returned as it is. (The send API renders every recipient's content with [`try_render`] up
/// front and refuses the request when one fails, so this fallback is only a safety net.)
pub fn render(template: &str, variables: &Map<String, Value>) -> String {
    try_render(template, variables)
        .or_else(|_| try_render(template, &Map::new()))
        .unwrap_or_else(|_| template.to_owned())
}

fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or(text);
    crate::names::truncate(line.trim(), 200)
}

/// The globals of a render: the recipient's variables, where any other name is nil (renders as
/// empty text) instead of an error.
#[derive(Debug)]
struct Lenient {
    vars: Object,
}

static NIL: LiquidValue = LiquidValue::Nil;

impl Lenient {
    fn new(variables: &Map<String, Value>) -> Self {
        let mut vars = Object::new();
        for (key, value) in variables {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            vars.insert(key.clone().into(), LiquidValue::scalar(text));
        }
        Self { vars }
    }
}

impl ValueView for Lenient {
    fn as_debug(&self) -> &dyn fmt::Debug {
        self
    }
    fn render(&self) -> DisplayCow<'_> {
        self.vars.render()
    }
    fn source(&self) -> DisplayCow<'_> {
        self.vars.source()
    }
    fn type_name(&self) -> &'static str {
        "object"
    }
    fn query_state(&self, state: State) -> bool {
        self.vars.query_state(state)
    }
    fn to_kstr(&self) -> KStringCow<'_> {
        self.vars.to_kstr()
    }
    fn to_value(&self) -> LiquidValue {
        self.vars.to_value()
    }
    fn as_object(&self) -> Option<&dyn ObjectView> {
        Some(self)
    }
}

impl ObjectView for Lenient {
    fn as_value(&self) -> &dyn ValueView {
        self
    }
    fn size(&self) -> i64 {
        self.vars.len() as i64
    }
    fn keys<'k>(&'k self) -> Box<dyn Iterator<Item = KStringCow<'k>> + 'k> {
        ObjectView::keys(&self.vars)
    }
    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        ObjectView::values(&self.vars)
    }
    fn iter<'k>(&'k self) -> Box<dyn Iterator<Item = (KStringCow<'k>, &'k dyn ValueView)> + 'k> {
        ObjectView::iter(&self.vars)
    }
    fn contains_key(&self, _index: &str) -> bool {
        true
    }
    fn get<'s>(&'s self, index: &str) -> Option<&'s dyn ValueView> {
        Some(ObjectView::get(&self.vars, index).unwrap_or(&NIL as &dyn ValueView))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check_template` skips the parser for text without `{{` or `{%`: such text must parse
    /// (as one literal) whatever else it holds, or the skip would let a bad template through.
    #[test]
    fn text_without_markup_always_parses() {
        let texts = [
            "",
            "Your order shipped",
            "}} %} { } {-{ %{ }%",
            "{ {",
            "{-% raw %-}",
            "a } b %} c {# d #}",
            "endif endraw {endcomment}",
            "emoji 🚚 and \u{0} nul",
        ];
        for text in texts {
            assert!(!has_markup(text), "{text:?}");
            assert!(parser().parse(text).is_ok(), "{text:?} does not parse");
            assert_eq!(check_template(text), Ok(()));
        }
        // Markup is still checked.
        assert!(check_template("{% if x %}unclosed").is_err());
        assert!(check_template("{{ x | plus: 1 }}").is_ok());
    }
}
