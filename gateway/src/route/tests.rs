//! Path normalization and routing, including the tricks an attacker of an
//! authorization gateway tries.

use super::*;

#[test]
fn normalization_cases() {
    let ok = [
        ("/", "/"),
        ("/crm/contacts", "/crm/contacts"),
        ("/crm//contacts///", "/crm/contacts"),
        ("/crm/./contacts", "/crm/contacts"),
        ("/crm/x/../contacts", "/crm/contacts"),
        ("/crm/%63ontacts", "/crm/contacts"),
        ("/crm/%2e%2e/api/v1/me", "/api/v1/me"),
        ("/crm/%2E/contacts", "/crm/contacts"),
        ("/a%7eb", "/a~b"),
        ("/name%20with%20space", "/name%20with%20space"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/CRM/Contacts", "/CRM/Contacts"),
    ];
    for (raw, want) in ok {
        assert_eq!(normalize(raw).as_deref(), Ok(want), "{raw}");
    }
    let refused = [
        ("crm/contacts", PathError::NotAbsolute),
        ("/..", PathError::AboveRoot),
        ("/crm/../../etc", PathError::AboveRoot),
        ("/crm/%2F..%2Fapi", PathError::AmbiguousEncoding("%2F".into())),
        ("/crm%2fcontacts", PathError::AmbiguousEncoding("%2F".into())),
        ("/crm/%5c..", PathError::AmbiguousEncoding("%5C".into())),
        ("/crm/%252e%252e", PathError::AmbiguousEncoding("%25".into())),
        ("/crm/%00", PathError::AmbiguousEncoding("%00".into())),
        ("/crm/%3b", PathError::AmbiguousEncoding("%3B".into())),
        ("/crm/contacts;jsessionid=1", PathError::ForbiddenChar(';')),
        ("/crm\\..\\api", PathError::ForbiddenChar('\\')),
        ("/crm/%", PathError::BadEncoding),
        ("/crm/%g1", PathError::BadEncoding),
        ("/crm/%4", PathError::BadEncoding),
    ];
    for (raw, want) in refused {
        assert_eq!(normalize(raw), Err(want), "{raw}");
    }
    assert_eq!(normalize(&format!("/{}", "a".repeat(MAX_PATH))), Err(PathError::TooLong));
}

#[test]
fn normalization_is_idempotent() {
    for raw in ["/a//b/./c/../d/", "/%61%2e%2e/x", "/x%20y/z", "/a/b/c"] {
        let once = normalize(raw).unwrap();
        assert_eq!(normalize(&once).unwrap(), once, "{raw}");
    }
}

fn route(name: &str, template: &str, methods: &[(&str, &str)], resource: (&str, ResourceId)) -> Route {
    Route {
        name: name.into(),
        template: Template::parse(name, template).unwrap(),
        actions: methods.iter().map(|(m, a)| ((*m).to_owned(), (*a).into())).collect(),
        upstream: "crm".into(),
        resource_type: resource.0.into(),
        resource_id: resource.1,
        forward_authorization: false,
        upstream_authenticates: false,
        feature: None,
        rate_limit: None,
    }
}

fn table() -> RouteTable {
    RouteTable::new(vec![
        route(
            "contacts",
            "/crm/contacts",
            &[("GET", "contact.list"), ("POST", "contact.create")],
            ("Tenant", ResourceId::Fixed("current".into())),
        ),
        route(
            "contact",
            "/crm/contacts/{id}",
            &[("GET", "contact.read"), ("PATCH", "contact.update")],
            ("Contact", ResourceId::Param("id".into())),
        ),
        route(
            "export",
            "/crm/contacts/export",
            &[("GET", "contact.export")],
            ("Tenant", ResourceId::Fixed("current".into())),
        ),
        route("files", "/files/{path*}", &[("GET", "file.read")], ("File", ResourceId::Param("path".into()))),
    ])
    .unwrap()
}

#[test]
fn matching_picks_the_most_specific_route_and_extracts_the_resource() {
    let t = table();
    let m = t.route("GET", "/crm/contacts/c-1").unwrap();
    assert_eq!((&*m.action, &*m.resource_type, &*m.resource_id), ("contact.read", "Contact", "c-1"));
    assert_eq!(&*t.route("GET", "/crm/contacts/export").unwrap().action, "contact.export");
    assert_eq!(&*t.route("POST", "/crm/contacts").unwrap().action, "contact.create");
    let m = t.route("GET", "/files/a/b/c.txt").unwrap();
    assert_eq!(&*m.resource_id, "a/b/c.txt");
    assert_eq!(t.route("GET", "/files"), Err(NoRoute::NotFound));
    let allow = |methods: &str| Err(NoRoute::MethodNotAllowed { allow: methods.into() });
    assert_eq!(t.route("DELETE", "/crm/contacts/c-1"), allow("GET, HEAD, PATCH"));
    assert_eq!(t.route("PUT", "/crm/contacts/export"), allow("GET, HEAD, PATCH"), "every route taking the path");
    assert_eq!(t.route("GET", "/crm/contacts/c-1/extra"), Err(NoRoute::NotFound));
}

#[test]
fn path_tricks_neither_bypass_nor_reach_unrouted_paths() {
    let t = table();
    // Every trick either resolves to the route an honest client would name
    // (and the upstream is sent that path), or is refused.
    let m = t.route("GET", "/crm//contacts/./c-1/").unwrap();
    assert_eq!((m.path.as_str(), &*m.action), ("/crm/contacts/c-1", "contact.read"));
    let m = t.route("GET", "/crm/contacts/%63-1").unwrap();
    assert_eq!(&*m.resource_id, "c-1");
    assert_eq!(t.route("GET", "/crm/../api/v1/tenants"), Err(NoRoute::NotFound));
    assert_eq!(t.route("GET", "/crm/%2e%2e/admin"), Err(NoRoute::NotFound));
    assert!(matches!(t.route("GET", "/crm/contacts%2Fc-1"), Err(NoRoute::Path(_))));
    assert!(matches!(t.route("GET", "/crm/contacts/c-1;/../../admin"), Err(NoRoute::Path(_))));
    assert_eq!(t.route("GET", "/CRM/contacts/c-1"), Err(NoRoute::NotFound), "routes are case-sensitive");
    assert_eq!(&*t.route("GET", "/crm/contacts/x/..").unwrap().action, "contact.list");
    assert_eq!(
        t.route("get", "/crm/contacts"),
        Err(NoRoute::MethodNotAllowed { allow: "GET, HEAD, POST".into() }),
        "methods are exact"
    );
}

/// HEAD is GET without the body: decided as GET where no route names it,
/// as the route that names it where one does.
#[test]
fn head_is_routed_as_get_unless_a_route_names_it() {
    let t = table();
    let m = t.route("HEAD", "/crm/contacts/c-1").unwrap();
    assert_eq!((&*m.action, &*m.resource_id), ("contact.read", "c-1"));
    assert_eq!(t.route("HEAD", "/crm/contacts/c-1/extra"), Err(NoRoute::NotFound));
    let t = RouteTable::new(vec![
        route("read", "/docs/{id}", &[("GET", "doc.read")], ("Doc", ResourceId::Param("id".into()))),
        route("peek", "/docs/{id}", &[("HEAD", "doc.peek")], ("Doc", ResourceId::Param("id".into()))),
        route("write", "/notes/{id}", &[("PUT", "note.write")], ("Note", ResourceId::Param("id".into()))),
    ])
    .unwrap();
    assert_eq!(&*t.route("HEAD", "/docs/d-1").unwrap().action, "doc.peek");
    assert_eq!(&*t.route("GET", "/docs/d-1").unwrap().action, "doc.read");
    assert_eq!(t.route("HEAD", "/notes/n-1"), Err(NoRoute::MethodNotAllowed { allow: "PUT".into() }));
}

/// Two spellings of one resource must be one Cedar id: the id policies see
/// is the id the upstream's router decodes.
#[test]
fn encoded_and_plain_spellings_of_an_id_are_one_resource() {
    let t = table();
    for raw in ["/crm/contacts/vip:1", "/crm/contacts/vip%3A1", "/crm/contacts/vip%3a1", "/crm/contacts/%76ip%3A1"] {
        let m = t.route("GET", raw).unwrap();
        assert_eq!((m.path.as_str(), &*m.resource_id), ("/crm/contacts/vip:1", "vip:1"), "{raw}");
    }
    // Escapes a segment needs stay escaped in the path, and are decoded in the id.
    let m = t.route("GET", "/crm/contacts/a%20b%3F").unwrap();
    assert_eq!((m.path.as_str(), &*m.resource_id), ("/crm/contacts/a%20b%3F", "a b?"));
    let m = t.route("GET", "/files/a%40b/c%2C").unwrap();
    assert_eq!((m.path.as_str(), &*m.resource_id), ("/files/a@b/c,", "a@b/c,"));
}

#[test]
fn invalid_templates_and_overlaps_are_refused() {
    for bad in ["/a/{}", "/a/{b}/{b}", "/a/{rest*}/b", "/a/x{b}", "/a//b", "/a/../b", "a", "/a/{b-c}"] {
        assert!(Template::parse("r", bad).is_err(), "{bad}");
    }
    let err = RouteTable::new(vec![
        route("one", "/a/{x}", &[("GET", "a")], ("A", ResourceId::Param("x".into()))),
        route("two", "/a/{y}", &[("GET", "b")], ("A", ResourceId::Param("y".into()))),
    ])
    .unwrap_err();
    assert!(matches!(err, RouteError::Overlap(..)), "{err}");
    // Same paths, different methods: fine.
    RouteTable::new(vec![
        route("read", "/a/{x}", &[("GET", "a")], ("A", ResourceId::Param("x".into()))),
        route("write", "/a/{y}", &[("PUT", "b")], ("A", ResourceId::Param("y".into()))),
    ])
    .unwrap();
    let err = RouteTable::new(vec![route("r", "/a/{x}", &[("GET", "a")], ("A", ResourceId::Param("nope".into())))])
        .unwrap_err();
    assert!(err.to_string().contains("`nope`"), "{err}");
}

#[test]
fn overlapping_templates_are_found() {
    let t = |s: &str| Template::parse("r", s).unwrap();
    for (a, b) in [
        ("/api/v1/{rest*}", "/api/v1/tenants"),
        ("/api/v1/{rest*}", "/api/{version}/foo/bar"),
        ("/api/{x}/foo", "/api/v1/{y}"),
        ("/healthz", "/{page}"),
    ] {
        assert!(t(a).overlaps(&t(b)) && t(b).overlaps(&t(a)), "{a} {b}");
    }
    for (a, b) in [
        ("/api/v1/{rest*}", "/api/v1"),
        ("/api/v1/{rest*}", "/crm/{rest*}"),
        ("/healthz", "/readyz"),
        ("/a/{x}", "/a/{x}/b"),
    ] {
        assert!(!t(a).overlaps(&t(b)) && !t(b).overlaps(&t(a)), "{a} {b}");
    }
}

/// The one-pass check that a path is already normal agrees with building
/// the normal form, on every path of up to six bytes from an alphabet of
/// the bytes that matter (separators, dots, escapes, refused bytes).
#[test]
fn a_path_taken_as_it_is_is_its_normal_form() {
    let alphabet = [b'/', b'.', b'a', b'%', b'2', b'e', b';', b'\\', b' ', 0x7f, 0xc3, 0xa9];
    let mut paths: Vec<Vec<u8>> = vec![Vec::new()];
    let mut checked = 0;
    for _ in 0..6 {
        paths = paths.iter().flat_map(|p| alphabet.iter().map(move |b| [p.as_slice(), &[*b]].concat())).collect();
        for path in &paths {
            let Ok(text) = std::str::from_utf8(path) else { continue };
            assert_eq!(normalize(text), rebuilt(text), "{text:?}");
            checked += 1;
        }
    }
    assert!(checked > 1_000_000, "{checked}");
}
