use proptest::prelude::*;

use super::*;

const BUDGET: &str = "docs://finance/budget-2026";

/// Spellings of `docs://finance/budget-2026` that every normalizing reader takes
/// for it: each has that normal form.
const ALIASES: &[&str] = &[
    "docs://finance/budget-2026",
    // dot segments, plain and percent-encoded in every case mix
    "docs://finance/./budget-2026",
    "docs://finance/titan/../budget-2026",
    "docs://finance/x/y/../../budget-2026",
    "docs://finance/x/%2e%2e/budget-2026",
    "docs://finance/x/%2E%2E/budget-2026",
    "docs://finance/x/%2E%2e/budget-2026",
    "docs://finance/x/.%2e/budget-2026",
    "docs://finance/x/%2e./budget-2026",
    "docs://finance/%2e/budget-2026",
    "docs://finance/../budget-2026",
    "docs://finance/../../../budget-2026",
    "docs://finance/budget-2026/../budget-2026",
    "docs://finance/budget-2026/./../budget-2026",
    // scheme and host case
    "DOCS://finance/budget-2026",
    "Docs://Finance/budget-2026",
    "docs://FINANCE/budget-2026",
    // percent-encoded unreserved characters, in the host and the path
    "docs://%66inance/budget-2026",
    "docs://%46INANCE/budget-2026",
    "docs://finance/%62udget-2026",
    "docs://finance/budget%2D2026",
    "docs://finance/%62%75%64%67%65%74%2d%32%30%32%36",
    "DOCS://%46inance/.%2E/x/%2E%2e/./%62udget-2026",
];

#[test]
fn aliases_have_one_normal_form() {
    for alias in ALIASES {
        assert_eq!(normalize(alias).as_deref(), Ok(BUDGET), "{alias}");
    }
}

#[test]
fn trailing_dot_segments_keep_a_directory() {
    // `/..` and `/.` at the end name the directory, with its trailing slash.
    for (input, normal) in [
        ("docs://finance/budget-2026/..", "docs://finance/"),
        (
            "docs://finance/budget-2026/x/..",
            "docs://finance/budget-2026/",
        ),
        (
            "docs://finance/budget-2026/.",
            "docs://finance/budget-2026/",
        ),
        ("docs://finance/a/b/%2e%2e", "docs://finance/a/"),
        ("docs://finance/..", "docs://finance/"),
        ("docs://finance/.", "docs://finance/"),
        ("docs://finance/a/../", "docs://finance/"),
        ("docs:/a/b/..", "docs:/a/"),
        ("docs:/..", "docs:/"),
    ] {
        assert_eq!(normalize(input).as_deref(), Ok(normal), "{input}");
    }
}

#[test]
fn forms_that_stay_as_they_are() {
    for uri in [
        "docs://titan/q1-strategy",
        "docs://finance/",
        "docs://finance",
        "docs:///x",
        "docs:/finance/budget-2026",
        "docs:finance/budget-2026",
        "file:///projects/myapp/config.json",
        "file://server.example/share/x",
        "https://example.com/a/b?c=d&e=%2F",
        "http://127.0.0.1:8080/",
        "urn:isbn:0451450523",
        "urn:ietf:rfc:3986",
        "mailto:ops@example.com",
        "postgres://db.internal:5432/sales/orders",
        "docs://finance/a%20b",
        "docs://finance/%C3%A9t%C3%A9",
        "docs://finance/x;v=1/y",
        "docs://finance/it's(1)!$&*+,=:@",
        "docs://finance/budget-2026/",
        "docs://finance/budget-2026?version=2",
        "docs://finance/q?a/b?c",
        "docs://[::1]/x",
        "docs://[2001:db8::8a2e:370:7334]:1234/x",
        "git+ssh://code.example/repo.git",
        "docs://finance:0/x",
        "docs://10.0.0.1/x",
        "docs://1/x",
    ] {
        assert_eq!(normalize(uri).as_deref(), Ok(uri), "{uri}");
    }
}

#[test]
fn scheme_based_normalization() {
    for (input, normal) in [
        ("HTTPS://Example.COM", "https://example.com/"),
        ("https://example.com:443/x", "https://example.com/x"),
        ("https://example.com:0443/x", "https://example.com/x"),
        ("http://example.com:80", "http://example.com/"),
        ("http://example.com:8080/x", "http://example.com:8080/x"),
        ("wss://example.com:443/x", "wss://example.com/x"),
        ("ws://example.com:80/x", "ws://example.com/x"),
        ("ftp://example.com:21/x", "ftp://example.com/x"),
        ("docs://finance:0080/x", "docs://finance:80/x"),
        ("docs://finance:00/x", "docs://finance:0/x"),
        ("file:/etc/hosts", "file:///etc/hosts"),
        ("file://localhost/etc/hosts", "file:///etc/hosts"),
        ("FILE://LOCALHOST/etc/hosts", "file:///etc/hosts"),
        ("file://", "file:///"),
        ("http://1.2.3.4/", "http://1.2.3.4/"),
    ] {
        assert_eq!(normalize(input).as_deref(), Ok(normal), "{input}");
    }
}

#[test]
fn ipv6_hosts_have_one_spelling() {
    for (input, normal) in [
        ("docs://[0:0:0:0:0:0:0:1]/x", "docs://[::1]/x"),
        ("docs://[::0001]/x", "docs://[::1]/x"),
        ("docs://[2001:DB8::1]/x", "docs://[2001:db8::1]/x"),
        ("http://[2001:db8:0:0:0:0:0:1]:80/", "http://[2001:db8::1]/"),
        ("docs://[::ffff:1.2.3.4]/x", "docs://[::ffff:1.2.3.4]/x"),
        ("docs://[::ffff:102:304]/x", "docs://[::ffff:1.2.3.4]/x"),
    ] {
        assert_eq!(normalize(input).as_deref(), Ok(normal), "{input}");
    }
    for bad in [
        "docs://[::1/x",
        "docs://[::1]x/y",
        "docs://[v1.fe]/x",
        "docs://[fe80::1%25eth0]/x",
        "docs://[1.2.3.4]/x",
        "docs://[]/x",
    ] {
        assert!(
            matches!(normalize(bad), Err(UriError::BadHost(_))),
            "{bad}: {:?}",
            normalize(bad)
        );
    }
}

#[test]
fn percent_encodings_are_normalized() {
    for (input, normal) in [
        // lower-case hex digits of kept encodings become upper case
        ("docs://finance/%c3%a9", "docs://finance/%C3%A9"),
        ("docs://finance/a%3fb", "docs://finance/a%3Fb"),
        ("docs://finance/a%23b", "docs://finance/a%23b"),
        ("docs://finance/a%20b", "docs://finance/a%20b"),
        // unreserved characters decoded, `~` and `_` too
        ("docs://finance/%7Euser/%5Fx", "docs://finance/~user/_x"),
        ("docs://finance/%41%5a%30", "docs://finance/AZ0"),
        // non-ASCII written as UTF-8 percent-encodings
        ("docs://finance/été", "docs://finance/%C3%A9t%C3%A9"),
        (
            "docs://finance/€?q=€",
            "docs://finance/%E2%82%AC?q=%E2%82%AC",
        ),
        ("docs://finance/😀", "docs://finance/%F0%9F%98%80"),
        ("urn:x:é", "urn:x:%C3%A9"),
        // in a query, `/` may be encoded and is kept so; dot segments are not removed
        ("docs://finance/x?path=a%2fb", "docs://finance/x?path=a%2Fb"),
        ("docs://finance/x?v=%2e%2E", "docs://finance/x?v=.."),
        ("docs://finance/x?p=/a/../b", "docs://finance/x?p=/a/../b"),
        // in an opaque path, `/` may be encoded
        ("urn:a%2fb", "urn:a%2Fb"),
    ] {
        assert_eq!(normalize(input).as_deref(), Ok(normal), "{input}");
    }
}

#[test]
fn ambiguous_forms_are_refused() {
    use UriError::*;
    let long = format!("docs://finance/{}", "a".repeat(MAX_URI_BYTES));
    let cases: Vec<(&str, UriError)> = vec![
        ("", Empty),
        (&long, TooLong),
        // no scheme: relative references
        ("budget-2026", NoScheme),
        ("/finance/budget-2026", NoScheme),
        ("//finance/budget-2026", NoScheme),
        ("finance/budget:2026", NoScheme),
        ("?x:y", NoScheme),
        (":x", NoScheme),
        ("1docs://finance/x", BadScheme),
        ("do_cs://finance/x", BadScheme),
        ("dócs://finance/x", BadScheme),
        // whitespace and control characters, anywhere
        (" docs://finance/budget-2026", Whitespace),
        ("docs://finance/budget-2026 ", Whitespace),
        ("docs://finance/budget 2026", Whitespace),
        ("docs://fin\tance/budget-2026", ControlCharacter),
        ("docs://finance/budget-2026\n", ControlCharacter),
        ("docs://finance/\u{0}x", ControlCharacter),
        ("docs://finance/\u{7f}x", ControlCharacter),
        ("docs://finance/\u{85}x", ControlCharacter),
        ("docs://finance/budget-2026\u{a0}", Whitespace),
        ("docs://finance/budget-2026\u{3000}", Whitespace),
        ("docs://finance/budget\u{200b}-2026", Invisible),
        ("\u{feff}docs://finance/budget-2026", Invisible),
        ("docs://finance/\u{202e}6202-tegdub", Invisible),
        ("docs://finance/bud\u{ad}get-2026", Invisible),
        // backslashes, literal or as a path separator
        ("docs://finance\\budget-2026", Backslash),
        ("docs://finance/x\\..\\budget-2026", Backslash),
        ("docs://finance/x%5C..%5Cbudget-2026", EncodedSeparator),
        ("docs://finance/x%5c..%5cbudget-2026", EncodedSeparator),
        // an encoded `/` would split differently after decoding
        ("docs://finance/x%2F..%2Fbudget-2026", EncodedSeparator),
        (
            "docs://finance/titan%2f..%2f..%2ffinance%2fbudget-2026",
            EncodedSeparator,
        ),
        // user information, even empty
        ("docs://@finance/budget-2026", UserInfo),
        ("docs://x@finance/budget-2026", UserInfo),
        ("docs://x:y@finance/budget-2026", UserInfo),
        ("https://user@example.com/", UserInfo),
        // ports
        ("docs://finance:/budget-2026", EmptyPort),
        ("https://example.com:/x", EmptyPort),
        ("docs://finance:x/budget-2026", BadPort),
        ("docs://finance:65536/budget-2026", BadPort),
        ("docs://finance:1:2/budget-2026", BadPort),
        ("docs://finance:-1/x", BadPort),
        ("docs://finance:+80/x", BadPort),
        // hosts
        ("docs://finance./budget-2026", BadHost("")),
        ("docs://.finance/budget-2026", BadHost("")),
        ("docs://fin..ance/budget-2026", BadHost("")),
        ("docs://fin%2Eance./x", BadHost("")),
        ("docs://fin%40ance/x", BadHost("")),
        ("docs://fin%2Fance/x", BadHost("")),
        ("docs://finance%3A80/x", BadHost("")),
        ("docs://fin%C3%A9/x", BadHost("")),
        ("docs://finé/x", BadHost("")),
        ("docs://ｆinance/x", BadHost("")),
        ("http://0x7f.1/", BadHost("")),
        ("http://2130706433/", BadHost("")),
        ("http://127.1/", BadHost("")),
        ("http://127.0.0.01/", BadHost("")),
        ("http://1.2.3.256/", BadHost("")),
        ("https:///x", BadHost("")),
        ("http://:80/x", BadHost("")),
        // special schemes need `//` and a host
        ("http:example.com/x", SchemeForm("")),
        ("https:/example.com/x", SchemeForm("")),
        ("file:etc/hosts", FileForm),
        ("file://host:8080/x", FileForm),
        ("file:///C:/../x", DriveDotSegment),
        ("file:///c:/a/%2e%2e/x", DriveDotSegment),
        ("file:///C:/x/../y", DriveDotSegment),
        // empty segments
        ("docs://finance//budget-2026", EmptySegment),
        ("docs://finance/x//../budget-2026", EmptySegment),
        ("docs:/a//b", EmptySegment),
        ("file:////etc/hosts", EmptySegment),
        // dot segments where readers disagree
        ("urn:a/../b", OpaqueDotSegment),
        ("urn:a/%2e%2e/b", OpaqueDotSegment),
        ("docs:./x", OpaqueDotSegment),
        // encodings
        ("docs://finance/%", BadEscape),
        ("docs://finance/%2", BadEscape),
        ("docs://finance/%zz", BadEscape),
        ("docs://finance/%%32%65", BadEscape),
        ("docs://finance/%FF", NotUtf8),
        ("docs://finance/%C3", NotUtf8),
        ("docs://finance/%C3x", NotUtf8),
        ("docs://finance/%80", NotUtf8),
        ("docs://finance/%C0%AE%C0%AE/x", NotUtf8),
        ("docs://finance/%E0%80%AE", NotUtf8),
        ("docs://finance/%ED%A0%80", NotUtf8),
        ("docs://finance/%00", EncodedControl),
        ("docs://finance/x%0A", EncodedControl),
        ("docs://finance/x%7f", EncodedControl),
        ("docs://finance/x%C2%85", EncodedControl),
        ("docs://finance/x%E2%80%8B", EncodedControl),
        ("docs://finance/x?%00", EncodedControl),
        ("docs://finance/%252e%252e/x", DoubleEncoding),
        ("docs://finance/%25%32%65", DoubleEncoding),
        ("docs://finance/x?q=%252F", DoubleEncoding),
        // characters a URI may not hold literally
        ("docs://finance/a{b", Disallowed('{')),
        ("docs://finance/a}b", Disallowed('}')),
        ("docs://finance/a|b", Disallowed('|')),
        ("docs://finance/a^b", Disallowed('^')),
        ("docs://finance/a`b", Disallowed('`')),
        ("docs://finance/a\"b", Disallowed('"')),
        ("docs://finance/a<b>", Disallowed('<')),
        ("docs://finance/a[0]", Disallowed('[')),
        ("docs://fin|ance/x", Disallowed('|')),
        ("docs://finance/x?a=<b>", Disallowed('<')),
        // fragments and empty queries
        ("docs://finance/budget-2026#", Fragment),
        ("docs://finance/budget-2026#section-2", Fragment),
        ("docs://finance/budget-2026?v=1#x", Fragment),
        ("docs://finance/budget-2026?", EmptyQuery),
    ];
    for (input, expected) in cases {
        let got = normalize(input);
        let same = match (&got, &expected) {
            (Err(BadHost(_)), BadHost(_)) | (Err(SchemeForm(_)), SchemeForm(_)) => true,
            (Err(e), expected) => e == expected,
            (Ok(_), _) => false,
        };
        assert!(same, "{input:?}: {got:?}, expected {expected:?}");
        // A refusal is a message, lowercase without a final period.
        let message = got.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(!message.is_empty() && !message.ends_with('.'), "{message}");
        assert!(
            message.starts_with(|c: char| !c.is_uppercase()),
            "{message}"
        );
    }
}

#[test]
fn templates_keep_their_expressions() {
    for (input, normal) in [
        ("docs://{id}", "docs://{id}"),
        ("file:///{path}", "file:///{path}"),
        ("DOCS://Finance/{name}", "docs://finance/{name}"),
        (
            "docs://finance/%62udget-{year}",
            "docs://finance/budget-{year}",
        ),
        (
            "docs://finance/{+path}{?q,lang}",
            "docs://finance/{+path}{?q,lang}",
        ),
        ("docs://finance{/segments*}", "docs://finance{/segments*}"),
        ("docs://finance/{#frag}", "docs://finance/{#frag}"),
        (
            "docs://finance/{x:3}/{a.b}/{%41}",
            "docs://finance/{x:3}/{a.b}/{%41}",
        ),
        ("docs://{host}:{port}/x", "docs://{host}:{port}/x"),
        ("users://{ID}/profile", "users://{ID}/profile"),
        ("https://example.com/{x}", "https://example.com/{x}"),
    ] {
        assert_eq!(normalize_template(input).as_deref(), Ok(normal), "{input}");
        // A template is not a resource URI.
        assert!(normalize(input).is_err(), "{input}");
    }
    for (bad, expected) in [
        ("docs://finance/{", UriError::BadExpression),
        ("docs://finance/}", UriError::BadExpression),
        ("docs://finance/{}", UriError::BadExpression),
        ("docs://finance/{a b}", UriError::Whitespace),
        ("docs://finance/{a-b}", UriError::BadExpression),
        ("docs://finance/{a..b}", UriError::BadExpression),
        ("docs://finance/{=a}", UriError::BadExpression),
        ("docs://finance/{a:0}", UriError::BadExpression),
        ("docs://finance/{a:10000}", UriError::BadExpression),
        ("docs://finance/{{a}}", UriError::BadExpression),
        ("docs://finance/../{a}", UriError::TemplateDotSegment),
        ("docs://finance/{a}/./b", UriError::TemplateDotSegment),
        ("docs://finance/{a}/%2e%2e/b", UriError::TemplateDotSegment),
        ("docs://@finance/{a}", UriError::UserInfo),
        ("docs://finance/{a}#x", UriError::Fragment),
        ("{scheme}://finance/x", UriError::BadScheme),
        ("docs://finance//{a}", UriError::EmptySegment),
    ] {
        assert_eq!(normalize_template(bad), Err(expected), "{bad}");
    }
    // Without an expression, a template normalizes like a URI (dot segments aside).
    let dotless = |a: &&&str| !a.contains('.') && !a.to_ascii_lowercase().contains("%2e");
    for uri in ALIASES.iter().filter(dotless) {
        assert_eq!(normalize_template(uri), normalize(uri), "{uri}");
    }
}

#[test]
fn resource_ids_are_server_and_normal_uri() {
    assert_eq!(
        normal_resource_id("docs/DOCS://finance/x/../budget-2026").as_deref(),
        Ok("docs/docs://finance/budget-2026")
    );
    assert_eq!(
        normal_resource_id("docs/docs://finance/budget-2026").as_deref(),
        Ok("docs/docs://finance/budget-2026")
    );
    assert_eq!(
        normal_resource_id("docs/Docs://{id}").as_deref(),
        Ok("docs/docs://{id}")
    );
    // The server part is an id of its own: never changed.
    assert_eq!(
        normal_resource_id("Docs/docs://x").as_deref(),
        Ok("Docs/docs://x")
    );
    for bad in ["docs", "docs/", "/docs://x", ""] {
        assert_eq!(
            normal_resource_id(bad),
            Err(UriError::NotServerAndUri),
            "{bad}"
        );
    }
    assert_eq!(normal_resource_id("s0/r0"), Err(UriError::NoScheme));
    assert_eq!(
        normal_resource_id("docs/docs://@finance/x"),
        Err(UriError::UserInfo)
    );
}

/// Strings built from the pieces aliases are made of.
fn uri_like() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "docs",
        "DOCS",
        "file",
        "https",
        "urn",
        ":",
        "//",
        "/",
        ".",
        "..",
        "%2e",
        "%2E",
        "%2f",
        "%41",
        "%c3%a9",
        "é",
        "?",
        "#",
        "@",
        "[",
        "]",
        "::1",
        "{x}",
        "{",
        "}",
        ":80",
        "a",
        "B",
        "localhost",
        "%",
        "%25",
        "~",
        "-",
        " ",
        "\\",
        "finance",
        "budget-2026",
        "0x7f",
        "1",
    ]);
    prop::collection::vec(piece, 1..14).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Never a panic; a normal form is its own normal form and within bounds.
    #[test]
    fn normal_forms_are_fixed_points(s in prop_oneof![uri_like(), any::<String>()]) {
        for template in [false, true] {
            let f = if template { normalize_template } else { normalize };
            if let Ok(n) = f(&s) {
                prop_assert_eq!(f(&n), Ok(n.clone()), "{:?}", s);
                prop_assert!(!n.is_empty());
                prop_assert!(n.is_ascii(), "{}", n);
                prop_assert!(!n.contains('#'), "{}", n);
                // Before the query: `//` only before the authority, no dot segments.
                let before_query = n.split('?').next().unwrap_or_default();
                let after_scheme = before_query.split_once(':').map(|(_, r)| r).unwrap_or_default();
                let hierarchical = after_scheme.starts_with('/');
                let path = after_scheme.strip_prefix("//").unwrap_or(after_scheme);
                prop_assert!(!hierarchical || !path.contains("//"), "{}", n);
                if !template {
                    prop_assert!(!path.contains("/./") && !path.contains("/../"), "{}", n);
                    prop_assert!(!path.ends_with("/.") && !path.ends_with("/.."), "{}", n);
                }
                // Ids built from it are already normal.
                let id = format!("docs/{n}");
                prop_assert_eq!(normal_resource_id(&id), Ok(id.clone()));
            }
        }
    }

    /// Inserting `x/..` or `.` segments, or percent-encoding unreserved characters of
    /// the path, never changes the normal form.
    #[test]
    fn equivalent_spellings_meet(
        segments in prop::collection::vec("[a-zA-Z0-9_~-]{1,8}", 1..5),
        detour in 0usize..5,
        encode in any::<prop::sample::Index>(),
        upper in any::<bool>(),
    ) {
        let plain = format!("docs://finance/{}", segments.join("/"));
        let expected = normalize(&plain);
        prop_assert_eq!(expected.as_deref(), Ok(plain.as_str()));
        // A detour through another segment and back, or a `.` segment.
        let at = detour % segments.len();
        let mut with_detour = segments.clone();
        with_detour.insert(at, "..".into());
        with_detour.insert(at, "elsewhere".into());
        with_detour.insert(0, ".".into());
        let detoured = format!("docs://finance/{}", with_detour.join("/"));
        prop_assert_eq!(normalize(&detoured), expected.clone(), "{}", detoured);
        // One character of the path percent-encoded.
        let path = segments.join("/");
        let i = encode.index(path.len());
        let c = path.as_bytes()[i];
        if c != b'/' {
            let hex = if upper { format!("%{c:02X}") } else { format!("%{c:02x}") };
            let encoded = format!("docs://finance/{}{}{}", &path[..i], hex, &path[i + 1..]);
            prop_assert_eq!(normalize(&encoded), expected.clone(), "{}", encoded);
        }
        // Scheme and host case.
        let shouted = format!("DOCS://FINANCE/{path}");
        prop_assert_eq!(normalize(&shouted), expected, "{}", shouted);
    }
}

#[test]
fn shown_text_is_cut_and_escaped() {
    let shown = |s: &str| Shown(s).to_string();
    assert_eq!(shown("docs://a b/é"), "docs://a b/é");
    // Control characters, backticks and invisible characters are escaped.
    assert_eq!(
        shown("a\n`b`\u{1b}[31m"),
        "a\\u{a}\\u{60}b\\u{60}\\u{1b}[31m"
    );
    assert_eq!(shown("ab\u{202E}cd\u{200B}"), "ab\\u{202e}cd\\u{200b}");
    // At most `SHOWN_CHARS` characters of the input, `…` where cut.
    let exact = "x".repeat(SHOWN_CHARS);
    assert_eq!(shown(&exact), exact);
    assert_eq!(shown(&format!("{exact}y")), format!("{exact}…"));
}
