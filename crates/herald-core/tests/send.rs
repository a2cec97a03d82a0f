//! The send body parser and Liquid templating: every rule of API.md's send body.

use herald_core::ids::{self, new_type_id};
use herald_core::send::{
    Priority, Recipient, SendRequest, Sender, parse, parse_valid, render, try_render,
};
use herald_core::{AppName, Provider};
use serde_json::{Map, Value, json};

const NOW: i64 = 1_800_000_000_000;

fn user_id() -> String {
    new_type_id(ids::USER)
}

fn minimal() -> Value {
    json!({
        "to": [{"token": "abc123", "provider": "APN"}],
        "content": {"body": "Hello"}
    })
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base.as_object_mut().unwrap().insert(key.into(), value);
    base
}

/// `body` parsed, asserting that the fast path (`parse_valid`, from the bytes) reads it alike.
fn ok(body: &Value) -> SendRequest {
    let request =
        parse(body, NOW).unwrap_or_else(|e| panic!("expected {body} to parse, got {e:?}"));
    let bytes = serde_json::to_vec(body).unwrap();
    assert_eq!(
        parse_valid(&bytes, NOW).as_ref(),
        Some(&request),
        "the fast path reads {body} otherwise"
    );
    request
}

/// The problems of `body`, asserting there is one at each of `paths` (and that the fast path,
/// `parse_valid`, leaves the body to `parse`).
fn problems_at(body: &Value, paths: &[&str]) -> Vec<(String, String)> {
    let problems = parse(body, NOW).expect_err("expected problems");
    let bytes = serde_json::to_vec(body).unwrap();
    assert_eq!(
        parse_valid(&bytes, NOW),
        None,
        "the fast path accepts {body}"
    );
    for path in paths {
        assert!(
            problems.iter().any(|(p, _)| p == path),
            "expected a problem at {path:?} in {problems:?}"
        );
    }
    problems
}

fn message_at(problems: &[(String, String)], path: &str) -> String {
    problems
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, m)| m.clone())
        .unwrap_or_else(|| panic!("no problem at {path} in {problems:?}"))
}

#[test]
fn minimal_body_gets_the_defaults() {
    let request = ok(&minimal());
    assert_eq!(request.from, Sender::AccountDefault);
    assert_eq!(request.priority, Priority::High);
    assert_eq!(request.ttl, SendRequest::MAX_TTL);
    assert_eq!(request.ttl, 2_419_200);
    assert!(!request.silent);
    assert!(!request.templated);
    assert_eq!(request.send_at_ms, None);
    assert!(request.tags.as_map().is_empty());
    assert_eq!(request.content.body.as_deref(), Some("Hello"));
    assert_eq!(
        request.to,
        vec![Recipient::Device {
            token: "abc123".into(),
            provider: Provider::Apn,
            variables: Map::new(),
        }]
    );
}

#[test]
fn full_body_round_trips_every_field() {
    let user = user_id();
    let body = json!({
        "from": {"appName": "shop"},
        "to": [
            {"token": "a1b2", "provider": "APN"},
            {"token": "fcm:tok-1", "provider": "FCM", "variables": {"name": "Bo"}},
            {"userId": user, "variables": {"name": "Ada"}}
        ],
        "content": {
            "title": "Hi {{ name }}", "body": "Your order shipped",
            "data": {"orderId": "42", "n": 7}, "image": "https://example.com/a.png",
            "badge": 3, "category": "ORDER", "clickAction": "OPEN_ORDER"
        },
        "silent": false,
        "priority": "LOW",
        "sound": "default",
        "ttl": 3600,
        "collapseKey": "order-42",
        "apn": {"aps": {"thread-id": "t"}},
        "fcm": {"android": {"direct_boot_ok": true}},
        "schedule": {"sendAt": "2027-12-01T09:00:00Z"},
        "tags": {"campaign": "shipping"}
    });
    let request = ok(&body);
    assert_eq!(
        request.from,
        Sender::App {
            app_name: AppName::parse("shop").unwrap()
        }
    );
    assert_eq!(request.to.len(), 3);
    assert_eq!(
        request.to[2],
        Recipient::User {
            user_id: user,
            variables: json!({"name": "Ada"}).as_object().unwrap().clone()
        }
    );
    assert_eq!(request.content.title.as_deref(), Some("Hi {{ name }}"));
    assert_eq!(request.content.data["n"], json!(7));
    assert_eq!(
        request.content.image.as_deref(),
        Some("https://example.com/a.png")
    );
    assert_eq!(request.content.badge, Some(3));
    assert_eq!(request.content.category.as_deref(), Some("ORDER"));
    assert_eq!(request.content.click_action.as_deref(), Some("OPEN_ORDER"));
    assert_eq!(request.priority, Priority::Low);
    assert_eq!(request.sound.as_deref(), Some("default"));
    assert_eq!(request.ttl, 3600);
    assert_eq!(request.collapse_key.as_deref(), Some("order-42"));
    assert_eq!(request.apn, Some(json!({"aps": {"thread-id": "t"}})));
    assert_eq!(
        request.fcm,
        Some(json!({"android": {"direct_boot_ok": true}}))
    );
    assert_eq!(
        request.send_at_ms,
        herald_core::time::parse_rfc3339("2027-12-01T09:00:00Z")
    );
    assert_eq!(request.tags.as_map()["campaign"], "shipping");
    assert!(request.templated);
    // The stored form (JSON) reads back identically.
    let stored = serde_json::to_string(&request).unwrap();
    let back: SendRequest = serde_json::from_str(&stored).unwrap();
    assert_eq!(back, request);
}

#[test]
fn body_must_be_an_object() {
    let problems = parse(&json!([1]), NOW).unwrap_err();
    assert_eq!(problems.len(), 1);
}

#[test]
fn unknown_fields_are_named_at_every_level() {
    let body = json!({
        "to": [{"token": "t", "provider": "APN", "tokn": "x"}],
        "content": {"body": "b", "subtitle": "s"},
        "from": {"app": "shop"},
        "schedule": {"sendAt": "2027-01-01T00:00:00Z", "timezone": "UTC"},
        "priorty": "HIGH"
    });
    let problems = problems_at(
        &body,
        &[
            "to[0].tokn",
            "content.subtitle",
            "from.app",
            "schedule.timezone",
            "priorty",
        ],
    );
    assert!(message_at(&problems, "priorty").contains("allowed:"));
    assert_eq!(problems.len(), 5, "{problems:?}");
}

#[test]
fn null_fields_count_as_absent() {
    let body = json!({
        "to": [{"token": "t", "provider": "FCM", "variables": null}],
        "content": {"body": "b", "title": null},
        "from": null, "priority": null, "ttl": null, "tags": null, "schedule": null
    });
    let request = ok(&body);
    assert_eq!(request.from, Sender::AccountDefault);
    assert_eq!(request.ttl, SendRequest::MAX_TTL);
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let body = json!({
        "to": [
            {"token": "ok", "provider": "APN"},
            {"token": "has space", "provider": "APN"},
            {"token": "x", "provider": "WEB"},
            {"token": "y", "provider": "FCM"},
            {"token": "", "provider": "apn"}
        ],
        "content": {"body": 5},
        "priority": "URGENT",
        "ttl": -1
    });
    let problems = problems_at(
        &body,
        &[
            "to[1].token",
            "to[2].provider",
            "to[4].token",
            "to[4].provider",
            "content.body",
            "priority",
            "ttl",
        ],
    );
    assert_eq!(problems.len(), 7, "{problems:?}");
    assert!(message_at(&problems, "to[2].provider").contains("APN, FCM"));
    assert!(message_at(&problems, "priority").contains("HIGH, LOW"));
}

// ---- from

#[test]
fn from_app_name() {
    let request = ok(&with(minimal(), "from", json!({"appName": "shop_2"})));
    assert!(matches!(request.from, Sender::App { .. }));
    problems_at(
        &with(minimal(), "from", json!({"appName": "Shop-App"})),
        &["from.appName"],
    );
    problems_at(
        &with(minimal(), "from", json!({"appName": 3})),
        &["from.appName"],
    );
    problems_at(
        &with(minimal(), "from", json!({"appName": ""})),
        &["from.appName"],
    );
}

#[test]
fn from_credentials_push_or_chat() {
    let push = new_type_id(ids::CREDENTIAL);
    let chat = format!("CR{}", "a".repeat(32));
    let request = ok(&with(minimal(), "from", json!({"apn": push, "fcm": chat})));
    assert_eq!(
        request.from,
        Sender::Credentials {
            apn: Some(push.clone()),
            fcm: Some(chat.clone())
        }
    );
    let request = ok(&with(minimal(), "from", json!({"fcm": push})));
    assert_eq!(
        request.from,
        Sender::Credentials {
            apn: None,
            fcm: Some(push.clone())
        }
    );
    let problems = problems_at(
        &with(
            minimal(),
            "from",
            json!({"apn": "comms_credential_nope", "fcm": "CR123"}),
        ),
        &["from.apn", "from.fcm"],
    );
    assert!(message_at(&problems, "from.apn").contains("credential ID"));
    // Another kind of TypeID is not a credential.
    problems_at(
        &with(minimal(), "from", json!({"apn": user_id()})),
        &["from.apn"],
    );
    problems_at(&with(minimal(), "from", json!({"apn": 7})), &["from.apn"]);
}

#[test]
fn from_app_and_credentials_together_is_an_error() {
    let push = new_type_id(ids::CREDENTIAL);
    let problems = problems_at(
        &with(minimal(), "from", json!({"appName": "shop", "apn": push})),
        &["from"],
    );
    assert!(message_at(&problems, "from").contains("not both"));
}

#[test]
fn from_absent_empty_or_not_an_object() {
    assert_eq!(ok(&minimal()).from, Sender::AccountDefault);
    assert_eq!(
        ok(&with(minimal(), "from", json!({}))).from,
        Sender::AccountDefault
    );
    problems_at(&with(minimal(), "from", json!("shop")), &["from"]);
}

// ---- to

#[test]
fn to_is_required_and_has_1_to_10000_entries() {
    let mut body = minimal();
    body.as_object_mut().unwrap().remove("to");
    problems_at(&body, &["to"]);
    problems_at(&with(minimal(), "to", json!([])), &["to"]);
    problems_at(&with(minimal(), "to", json!({"token": "t"})), &["to"]);

    let entry = json!({"token": "t", "provider": "FCM"});
    let max = Value::Array(vec![entry.clone(); 10_000]);
    assert_eq!(ok(&with(minimal(), "to", max)).to.len(), 10_000);
    let over = Value::Array(vec![entry; 10_001]);
    let problems = problems_at(&with(minimal(), "to", over), &["to"]);
    assert_eq!(problems.len(), 1, "one problem for the list, not per entry");
    assert!(problems[0].1.contains("10000"));
}

#[test]
fn device_recipients() {
    let long = "f".repeat(4096);
    let request = ok(&with(
        minimal(),
        "to",
        json!([{"token": long, "provider": "FCM"}]),
    ));
    assert!(matches!(
        &request.to[0],
        Recipient::Device {
            provider: Provider::Fcm,
            ..
        }
    ));
    let body = with(
        minimal(),
        "to",
        json!([
            {"token": "f".repeat(4097), "provider": "FCM"},
            {"token": "tab\there", "provider": "FCM"},
            {"token": 12, "provider": "APN"},
            {"provider": "APN"},
            {"token": "abc"},
            {"token": "abc", "provider": 1},
            "abc"
        ]),
    );
    problems_at(
        &body,
        &[
            "to[0].token",
            "to[1].token",
            "to[2].token",
            "to[3].token",
            "to[4].provider",
            "to[5].provider",
            "to[6]",
        ],
    );
}

#[test]
fn user_recipients() {
    let user = user_id();
    let request = ok(&with(minimal(), "to", json!([{"userId": user}])));
    assert_eq!(
        request.to[0],
        Recipient::User {
            user_id: user.clone(),
            variables: Map::new()
        }
    );
    let body = with(
        minimal(),
        "to",
        json!([
            {"userId": "comms_pushnotificationuser_short"},
            {"userId": new_type_id(ids::DEVICE_REGISTRATION)},
            {"userId": 42},
            {"userId": user, "token": "t", "provider": "APN"},
            {}
        ]),
    );
    let problems = problems_at(
        &body,
        &[
            "to[0].userId",
            "to[1].userId",
            "to[2].userId",
            "to[3]",
            "to[4]",
        ],
    );
    assert!(message_at(&problems, "to[3]").contains("not both"));
}

#[test]
fn variables_are_string_values() {
    let body = with(
        minimal(),
        "to",
        json!([
            {"token": "t", "provider": "APN", "variables": {"name": "Ada", "n": 1, "o": {}}},
            {"userId": user_id(), "variables": ["x"]}
        ]),
    );
    let problems = problems_at(
        &body,
        &["to[0].variables.n", "to[0].variables.o", "to[1].variables"],
    );
    assert_eq!(problems.len(), 3, "{problems:?}");
}

// ---- content

#[test]
fn content_body_required_unless_silent() {
    let mut body = minimal();
    body.as_object_mut().unwrap().remove("content");
    problems_at(&body, &["content"]);
    problems_at(
        &with(minimal(), "content", json!({"title": "t"})),
        &["content.body"],
    );
    problems_at(
        &with(minimal(), "content", json!({"body": ""})),
        &["content.body"],
    );
    problems_at(&with(minimal(), "content", json!("hello")), &["content"]);

    // Silent: no body, no title, even no content.
    let silent = with(
        with(minimal(), "content", json!({"data": {"sync": "inbox"}})),
        "silent",
        json!(true),
    );
    let request = ok(&silent);
    assert!(request.silent);
    assert_eq!(request.content.body, None);
    let mut bare = with(minimal(), "silent", json!(true));
    bare.as_object_mut().unwrap().remove("content");
    assert!(ok(&bare).silent);
    problems_at(&with(minimal(), "silent", json!("yes")), &["silent"]);
}

#[test]
fn content_field_types() {
    let body = with(
        minimal(),
        "content",
        json!({
            "body": "b", "title": 1, "data": "x", "image": 5, "badge": -1,
            "category": 2, "clickAction": false
        }),
    );
    let problems = problems_at(
        &body,
        &[
            "content.title",
            "content.data",
            "content.image",
            "content.badge",
            "content.category",
            "content.clickAction",
        ],
    );
    assert_eq!(problems.len(), 6, "{problems:?}");
}

#[test]
fn badge_is_a_non_negative_integer() {
    let content = |badge: Value| with(minimal(), "content", json!({"body": "b", "badge": badge}));
    assert_eq!(ok(&content(json!(0))).content.badge, Some(0));
    assert_eq!(ok(&content(json!(99))).content.badge, Some(99));
    for bad in [json!(-1), json!(1.5), json!("3"), json!(4_294_967_296u64)] {
        problems_at(&content(bad), &["content.badge"]);
    }
}

#[test]
fn image_is_an_http_url() {
    let content = |image: &str| with(minimal(), "content", json!({"body": "b", "image": image}));
    ok(&content("https://cdn.example.com/a.png?x=1"));
    ok(&content("http://example.com"));
    for bad in [
        "ftp://example.com/a.png",
        "example.com/a.png",
        "https://",
        "https:///path",
        "https://exa mple.com/",
        "javascript:alert(1)",
    ] {
        problems_at(&content(bad), &["content.image"]);
    }
    let long = format!("https://example.com/{}", "a".repeat(2100));
    problems_at(&content(&long), &["content.image"]);
}

#[test]
fn data_is_an_object_without_reserved_keys() {
    let content = |data: Value| with(minimal(), "content", json!({"body": "b", "data": data}));
    let request = ok(&content(json!({"orderId": "42", "nested": {"a": [1]}})));
    assert_eq!(request.content.data["nested"], json!({"a": [1]}));
    let problems = problems_at(
        &content(json!({"aps": {}, "from": "x", "google.c": "y", "gcm_x": "z", "ok": "fine"})),
        &[
            "content.data.aps",
            "content.data.from",
            "content.data.google.c",
            "content.data.gcm_x",
        ],
    );
    assert_eq!(problems.len(), 4, "{problems:?}");
}

// ---- priority, ttl, collapseKey, sound, overrides

#[test]
fn priority_is_high_or_low() {
    assert_eq!(
        ok(&with(minimal(), "priority", json!("HIGH"))).priority,
        Priority::High
    );
    assert_eq!(
        ok(&with(minimal(), "priority", json!("LOW"))).priority,
        Priority::Low
    );
    for bad in [json!("high"), json!("NORMAL"), json!(10)] {
        let problems = problems_at(&with(minimal(), "priority", bad), &["priority"]);
        assert!(message_at(&problems, "priority").contains("HIGH, LOW"));
    }
}

#[test]
fn ttl_range() {
    assert_eq!(ok(&with(minimal(), "ttl", json!(0))).ttl, 0);
    assert_eq!(ok(&with(minimal(), "ttl", json!(2_419_200))).ttl, 2_419_200);
    for bad in [json!(2_419_201), json!(-1), json!(1.5), json!("60")] {
        problems_at(&with(minimal(), "ttl", bad), &["ttl"]);
    }
}

#[test]
fn collapse_key_is_at_most_64_bytes() {
    ok(&with(minimal(), "collapseKey", json!("k".repeat(64))));
    problems_at(
        &with(minimal(), "collapseKey", json!("k".repeat(65))),
        &["collapseKey"],
    );
    // Bytes, not characters: 22 three-byte characters are 66 bytes.
    problems_at(
        &with(minimal(), "collapseKey", json!("€".repeat(22))),
        &["collapseKey"],
    );
    problems_at(&with(minimal(), "collapseKey", json!("")), &["collapseKey"]);
    problems_at(&with(minimal(), "collapseKey", json!(1)), &["collapseKey"]);
}

#[test]
fn sound_is_a_non_empty_string() {
    ok(&with(minimal(), "sound", json!("chime.caf")));
    problems_at(&with(minimal(), "sound", json!(true)), &["sound"]);
    problems_at(&with(minimal(), "sound", json!("")), &["sound"]);
}

#[test]
fn provider_overrides_are_objects() {
    ok(&with(minimal(), "apn", json!({"aps": {"thread-id": "x"}})));
    problems_at(&with(minimal(), "apn", json!("x")), &["apn"]);
    problems_at(&with(minimal(), "fcm", json!([1])), &["fcm"]);
}

// ---- schedule

#[test]
fn schedule_future_past_and_bad() {
    let at = |text: &str| with(minimal(), "schedule", json!({"sendAt": text}));
    // Future: kept.
    let future = herald_core::time::format_rfc3339(NOW + 3_600_000);
    assert_eq!(ok(&at(&future)).send_at_ms, Some(NOW + 3_600_000));
    // Other offsets and fractions are accepted.
    assert_eq!(
        ok(&at("2030-01-01T01:00:00.250+01:00")).send_at_ms,
        Some(1_893_456_000_250)
    );
    // Past or now: send now.
    let past = herald_core::time::format_rfc3339(NOW - 1000);
    assert_eq!(ok(&at(&past)).send_at_ms, None);
    assert_eq!(
        ok(&at(&herald_core::time::format_rfc3339(NOW))).send_at_ms,
        None
    );
    for bad in [
        "tomorrow",
        "2027-13-01T00:00:00Z",
        "2027-01-01 09:00:00",
        "",
    ] {
        let problems = problems_at(&at(bad), &["schedule.sendAt"]);
        assert!(message_at(&problems, "schedule.sendAt").contains("RFC 3339"));
    }
    problems_at(
        &with(minimal(), "schedule", json!({"sendAt": 1_900_000_000})),
        &["schedule.sendAt"],
    );
    problems_at(
        &with(minimal(), "schedule", json!({})),
        &["schedule.sendAt"],
    );
    problems_at(&with(minimal(), "schedule", json!("soon")), &["schedule"]);
}

// ---- tags

#[test]
fn tags_follow_the_tag_rules() {
    ok(&with(minimal(), "tags", json!({"campaign": "x"})));
    problems_at(&with(minimal(), "tags", json!({"n": 1})), &["tags.n"]);
    problems_at(&with(minimal(), "tags", json!(["x"])), &["tags"]);
    let eleven: Map<String, Value> = (0..11).map(|i| (format!("k{i}"), json!("v"))).collect();
    problems_at(&with(minimal(), "tags", Value::Object(eleven)), &["tags"]);
    problems_at(
        &with(minimal(), "tags", json!({"k": "v".repeat(257)})),
        &["tags.k"],
    );
    problems_at(
        &with(minimal(), "tags", json!({"k".repeat(129): "v"})),
        &[format!("tags.{}", "k".repeat(129)).as_str()],
    );
}

// ---- templates

#[test]
fn templated_when_title_or_body_has_placeholders() {
    let content = |c: Value| ok(&with(minimal(), "content", c));
    assert!(!content(json!({"body": "Plain text, 100% {curly}"})).templated);
    assert!(content(json!({"body": "Hi {{ name }}"})).templated);
    assert!(content(json!({"body": "b", "title": "{% if vip %}VIP{% endif %}"})).templated);
    // Variables without placeholders render the same for everyone: not templated.
    let request = ok(&with(
        minimal(),
        "to",
        json!([{"token": "t", "provider": "APN", "variables": {"name": "Ada"}}]),
    ));
    assert!(!request.templated);
}

#[test]
fn templates_must_parse() {
    let problems = problems_at(
        &with(
            minimal(),
            "content",
            json!({"title": "Hi {{ name", "body": "{% if x %}unclosed"}),
        ),
        &["content.title", "content.body"],
    );
    assert!(message_at(&problems, "content.title").contains("template"));
    // Loops and includes are not part of the dialect.
    problems_at(
        &with(
            minimal(),
            "content",
            json!({"body": "{% for i in (1..100000000) %}x{% endfor %}"}),
        ),
        &["content.body"],
    );
    problems_at(
        &with(
            minimal(),
            "content",
            json!({"body": "{% include 'secrets' %}"}),
        ),
        &["content.body"],
    );
    problems_at(
        &with(
            minimal(),
            "content",
            json!({"body": "{{ name | nosuchfilter }}"}),
        ),
        &["content.body"],
    );
}

#[test]
fn render_fills_variables_and_missing_ones_are_empty() {
    let vars = json!({"name": "Ada", "city": "Paris"})
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(render("Hi {{ name }}!", &vars), "Hi Ada!");
    assert_eq!(render("Hi {{ nobody }}!", &vars), "Hi !");
    assert_eq!(render("Hi {{ name }}!", &Map::new()), "Hi !");
    assert_eq!(
        render("{{ name | upcase }} in {{ city }}", &vars),
        "ADA in Paris"
    );
    assert_eq!(
        render("{% if vip %}Dear VIP{% else %}Hello{% endif %}", &vars),
        "Hello"
    );
    assert_eq!(
        render("{{ missing | default: 'friend' }}", &Map::new()),
        "friend"
    );
    assert_eq!(render("no placeholders", &vars), "no placeholders");
    // Values are text, never markup: a variable holding Liquid is not evaluated.
    let sneaky = json!({"name": "{{ city }}"}).as_object().unwrap().clone();
    assert_eq!(render("Hi {{ name }}", &sneaky), "Hi {{ city }}");
}

#[test]
fn rendering_errors_depend_on_the_values() {
    let vars = |v: Value| v.as_object().unwrap().clone();
    // Parses (so the request is valid), renders for a number, fails for text.
    assert!(herald_core::send::check_template("{{ n | plus: 1 }}").is_ok());
    assert_eq!(
        try_render("{{ n | plus: 1 }}", &vars(json!({"n": "2"}))),
        Ok("3".into())
    );
    let error = try_render("{{ n | plus: 1 }}", &vars(json!({"n": "abc"}))).unwrap_err();
    assert!(error.contains("cannot be rendered"), "{error}");
    // `render` never fails: without usable values it falls back, and finally to the raw text.
    assert_eq!(
        render("{{ n | plus: 1 }}", &vars(json!({"n": "abc"}))),
        "{{ n | plus: 1 }}"
    );
    assert_eq!(
        render(
            "{{ n | default: 'x' | append: '!' }}",
            &vars(json!({"n": "abc"}))
        ),
        "abc!"
    );
    assert_eq!(render("{{ broken", &Map::new()), "{{ broken");
    assert!(try_render("{{ broken", &Map::new()).is_err());
}

/// The fast path leaves to `parse` what it does not read exactly alike: repeated keys (a
/// `Value` keeps the last), a provider name with an escape, a repeated recipient field.
#[test]
fn the_fast_path_leaves_odd_bodies_to_parse() {
    let repeated =
        br#"{"to":[{"token":"t","provider":"APN"}],"content":{"body":"a"},"content":{"body":"b"}}"#;
    assert_eq!(parse_valid(repeated, NOW), None);
    let value: Value = serde_json::from_slice(repeated).unwrap();
    assert_eq!(ok_slow(&value).content.body.as_deref(), Some("b"));

    let escaped = br#"{"to":[{"token":"t","provider":"\u0041PN"}],"content":{"body":"a"}}"#;
    assert_eq!(parse_valid(escaped, NOW), None);
    let value: Value = serde_json::from_slice(escaped).unwrap();
    assert!(matches!(
        ok_slow(&value).to[0],
        Recipient::Device {
            provider: Provider::Apn,
            ..
        }
    ));

    let twice = br#"{"to":[{"token":"t","token":"u","provider":"FCM"}],"content":{"body":"a"}}"#;
    assert_eq!(parse_valid(twice, NOW), None);
    assert_eq!(parse_valid(b"not json", NOW), None);
    assert_eq!(parse_valid(b"[]", NOW), None);
    // A well-formed body is read by the fast path.
    let plain = br#"{"to":[{"token":"t","provider":"FCM"}],"content":{"body":"a"}}"#;
    assert!(parse_valid(plain, NOW).is_some());
}

fn ok_slow(body: &Value) -> SendRequest {
    parse(body, NOW).unwrap_or_else(|e| panic!("expected {body} to parse, got {e:?}"))
}

/// `null` counts as absent in a recipient on both paths (`ok` and `problems_at` compare them).
#[test]
fn null_recipient_fields_read_alike_on_both_paths() {
    let user = user_id();
    let request = ok(&with(
        minimal(),
        "to",
        json!([{"token": null, "provider": null, "userId": user}]),
    ));
    assert!(matches!(&request.to[0], Recipient::User { user_id, .. } if *user_id == user));
    let request = ok(&with(
        minimal(),
        "to",
        json!([{"token": "t", "provider": "APN", "userId": null}]),
    ));
    assert!(matches!(&request.to[0], Recipient::Device { token, .. } if token == "t"));
    problems_at(
        &with(minimal(), "to", json!([{"token": "t", "provider": null}])),
        &["to[0].provider"],
    );
    problems_at(
        &with(minimal(), "to", json!([{"token": null, "provider": null}])),
        &["to[0]"],
    );
}
