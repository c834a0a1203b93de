//! Shared, tolerant XML reading and writing for the SIP event bodies.
//!
//! Bodies are read into a small owned tree ([`Element`]) by an iterative loop over quick-xml
//! events: nothing recurses on the input's nesting, and the tree itself is at most
//! [`MAX_DEPTH`] deep, so walking or dropping it cannot exhaust the stack.
//!
//! Tolerance (real PIDF bodies carry these): a UTF-8 byte order mark, the XML declaration,
//! comments, processing instructions and a DOCTYPE are skipped. No entity is ever expanded
//! beyond the five predefined ones and character references (XML 1.0 §4.6); references to
//! other entities (declared in a DOCTYPE or not) are dropped, which also defuses
//! "billion laughs" style bodies. Names are compared by namespace URI, never by prefix
//! (Namespaces in XML 1.0 §4).

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use quick_xml::XmlVersion;

use super::BodyError;

/// Deepest element nesting accepted (the root is depth 1).
pub const MAX_DEPTH: usize = 32;
/// Largest body accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Most attributes (namespace declarations included) accepted on one element.
pub const MAX_ATTRIBUTES: usize = 32;
/// Most namespace bindings in scope at once.
const MAX_NAMESPACE_BINDINGS: usize = 32;

/// Namespace URIs of the bodies we read and write.
pub mod ns {
    pub const PIDF: &str = "urn:ietf:params:xml:ns:pidf";
    pub const DATA_MODEL: &str = "urn:ietf:params:xml:ns:pidf:data-model";
    pub const RPID: &str = "urn:ietf:params:xml:ns:pidf:rpid";
    pub const JABBER_CLIENT: &str = "jabber:client";
    pub const WATCHERINFO: &str = "urn:ietf:params:xml:ns:watcherinfo";
    pub const DIALOG_INFO: &str = "urn:ietf:params:xml:ns:dialog-info";
    pub const XML: &str = "http://www.w3.org/XML/1998/namespace";
}

/// The namespace of an element or attribute, interned: the parsers only ever ask about
/// these, every other URI is [`Ns::Other`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Ns {
    /// No namespace (unprefixed attributes, or elements without a default namespace).
    None,
    Pidf,
    DataModel,
    Rpid,
    JabberClient,
    Watcherinfo,
    DialogInfo,
    Xml,
    /// Any other URI, or a prefix that was never declared.
    Other,
}

impl Ns {
    fn from_resolved(res: &ResolveResult<'_>) -> Ns {
        match res {
            ResolveResult::Unbound => Ns::None,
            ResolveResult::Unknown(_) => Ns::Other,
            ResolveResult::Bound(uri) => match uri.into_inner() {
                ns::PIDF => Ns::Pidf,
                ns::DATA_MODEL => Ns::DataModel,
                ns::RPID => Ns::Rpid,
                ns::JABBER_CLIENT => Ns::JabberClient,
                ns::WATCHERINFO => Ns::Watcherinfo,
                ns::DIALOG_INFO => Ns::DialogInfo,
                ns::XML => Ns::Xml,
                "" => Ns::None,
                _ => Ns::Other,
            },
        }
    }
}

/// One attribute, namespace declarations excluded.
#[derive(Clone, Debug)]
pub struct Attr {
    pub ns: Ns,
    pub name: String,
    pub value: String,
}

/// One element of a parsed body: its resolved name, attributes, child elements and the
/// concatenation of its own character data (entity and character references resolved).
#[derive(Clone, Debug)]
pub struct Element {
    pub ns: Ns,
    pub name: String,
    pub attrs: Vec<Attr>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    /// Whether this element is `{ns}name`.
    pub fn is(&self, ns: Ns, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    /// An unqualified attribute (`<tuple id=..>`): attributes without a prefix are in no
    /// namespace, whatever the element's default namespace is.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attr_ns(Ns::None, name)
    }

    pub fn attr_ns(&self, ns: Ns, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns == ns && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// `xml:lang` of this element, if written on it.
    pub fn lang(&self) -> Option<&str> {
        self.attr_ns(Ns::Xml, "lang")
    }

    /// Character data with XML white space trimmed at both ends.
    pub fn trimmed(&self) -> &str {
        trim_xml(&self.text)
    }

    /// Trimmed character data, `None` when empty.
    pub fn value(&self) -> Option<String> {
        let t = self.trimmed();
        (!t.is_empty()).then(|| t.to_string())
    }

    /// Whether the element carries `mustUnderstand='1'|'true'` (RFC 3863 §4.1.3); the
    /// attribute may be unqualified or in the PIDF namespace.
    pub fn must_understand(&self) -> bool {
        self.attrs
            .iter()
            .filter(|a| a.name == "mustUnderstand" && matches!(a.ns, Ns::None | Ns::Pidf))
            .any(|a| matches!(trim_xml(&a.value), "1" | "true"))
    }
}

/// Trims XML white space (S production: space, tab, CR, LF) only.
pub fn trim_xml(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

fn malformed(e: impl std::fmt::Display) -> BodyError {
    BodyError::Malformed(e.to_string())
}

/// Reads a whole document into a tree, enforcing the limits above.
///
/// Errors: [`BodyError::TooLarge`] past a limit, [`BodyError::Malformed`] for anything that
/// is not a single well-formed UTF-8 element tree.
pub fn parse_document(bytes: &[u8]) -> Result<Element, BodyError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(BodyError::TooLarge(format!(
            "{} bytes, limit {MAX_DOCUMENT_BYTES}",
            bytes.len()
        )));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| malformed(format!("not UTF-8: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    let mut reader = NsReader::from_str(text);
    reader
        .resolver_mut()
        .set_max_namespace_bindings(MAX_NAMESPACE_BINDINGS);

    // Open elements, innermost last: the explicit stack replaces recursion.
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let (resolved, event) = reader.read_resolved_event().map_err(malformed)?;
        let ns = Ns::from_resolved(&resolved);
        match event {
            Event::Start(start) | Event::Empty(start) if root.is_some() => {
                return Err(malformed(format!(
                    "element <{}> after the root element",
                    start.name().into_inner()
                )));
            }
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(BodyError::TooLarge(format!(
                        "elements nested deeper than {MAX_DEPTH}"
                    )));
                }
                let el = element(&reader, ns, &start)?;
                stack.push(el);
            }
            Event::Empty(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(BodyError::TooLarge(format!(
                        "elements nested deeper than {MAX_DEPTH}"
                    )));
                }
                let el = element(&reader, ns, &start)?;
                attach(&mut stack, &mut root, el);
            }
            Event::End(_) => {
                // quick-xml checks that end names match; an unmatched end is an error there.
                let el = stack
                    .pop()
                    .ok_or_else(|| malformed("end tag without a start tag"))?;
                attach(&mut stack, &mut root, el);
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                push_text(&mut stack, &content)?;
            }
            Event::CData(c) => {
                let content = c.xml10_content();
                push_text(&mut stack, &content)?;
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(malformed)? {
                    Some(c) => Some(c.to_string()),
                    None => resolve_predefined_entity(&r).map(str::to_string),
                };
                match resolved {
                    Some(s) => push_text(&mut stack, &s)?,
                    None => {
                        // Never expanded (no DTD processing); dropping keeps the rest usable.
                        tracing::debug!(entity = %&*r, "dropping reference to an undeclared entity");
                    }
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(malformed("document ends inside an element"));
    }
    root.ok_or_else(|| malformed("no root element"))
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

fn push_text(stack: &mut [Element], s: &str) -> Result<(), BodyError> {
    match stack.last_mut() {
        Some(top) => {
            top.text.push_str(s);
            Ok(())
        }
        None if trim_xml(s).is_empty() => Ok(()),
        None => Err(malformed("character data outside the root element")),
    }
}

fn element(reader: &NsReader<&[u8]>, ns: Ns, start: &BytesStart<'_>) -> Result<Element, BodyError> {
    let name = start.local_name().into_inner().to_string();
    let mut attrs = Vec::new();
    for (n, attr) in start.attributes().enumerate() {
        if n >= MAX_ATTRIBUTES {
            return Err(BodyError::TooLarge(format!(
                "more than {MAX_ATTRIBUTES} attributes on <{name}>"
            )));
        }
        let attr = attr.map_err(malformed)?;
        let key = attr.key.into_inner();
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        let (resolved, local) = reader.resolver().resolve_attribute(attr.key);
        let attr_ns = Ns::from_resolved(&resolved);
        let value = attr
            .normalized_value_with(XmlVersion::Implicit1_0, 1, |entity| {
                // Same rule as in text: predefined entities only, others vanish.
                resolve_predefined_entity(entity).or(Some(""))
            })
            .map_err(malformed)?
            .into_owned();
        attrs.push(Attr {
            ns: attr_ns,
            name: local.into_inner().to_string(),
            value,
        });
    }
    Ok(Element {
        ns,
        name,
        attrs,
        children: Vec::new(),
        text: String::new(),
    })
}

/// Whether `c` may appear in an XML 1.0 document (Char production, §2.2).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Appends `s` as character data: `&`, `<`, `>` escaped, CR as a character reference (so
/// it survives end-of-line normalisation), characters XML cannot carry dropped.
pub fn push_text_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

/// Appends `s` as an attribute value to be put between single quotes: markup characters
/// and both quotes escaped, tab/CR/LF as character references (so attribute-value
/// normalisation keeps them), characters XML cannot carry dropped.
pub fn push_attr_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

/// Appends ` name='value'` with the value escaped.
pub fn push_attr(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("='");
    push_attr_escaped(out, value);
    out.push('\'');
}

/// Appends `<name attrs>text</name>`; `attrs` are written as given (already escaped).
pub fn push_text_element(out: &mut String, name: &str, attrs: &[(&str, &str)], text: &str) {
    out.push('<');
    out.push_str(name);
    for (k, v) in attrs {
        push_attr(out, k, v);
    }
    out.push('>');
    push_text_escaped(out, text);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// The XML declaration every body starts with (RFC 3863 §4.1 requires one).
pub const DECLARATION: &str = "<?xml version='1.0' encoding='UTF-8'?>\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_bom_is_skipped() {
        let doc = parse_document(b"\xEF\xBB\xBF<a xmlns='urn:x'/>").expect("parses");
        assert_eq!(doc.name, "a");
    }

    #[test]
    fn comments_pi_and_doctype_are_ignored() {
        let doc = parse_document(
            b"<?xml version='1.0'?><!DOCTYPE a [<!ENTITY e 'boom'>]><!-- c --><?pi x?><a>x<!-- y -->z</a>",
        )
        .expect("parses");
        assert_eq!(doc.text, "xz");
    }

    #[test]
    fn undeclared_and_dtd_entities_are_not_expanded() {
        let doc = parse_document(b"<!DOCTYPE a [<!ENTITY e 'boom'>]><a>1&e;2</a>").expect("parses");
        assert_eq!(doc.text, "12");
    }

    #[test]
    fn predefined_entities_and_char_refs_are_resolved_in_text_and_attributes() {
        let doc =
            parse_document(b"<a v='&lt;&#10;&#x41;&unknown;'>&amp;&#233;&gt;</a>").expect("parses");
        assert_eq!(doc.text, "&\u{e9}>");
        assert_eq!(doc.attr("v"), Some("<\nA"));
    }

    #[test]
    fn namespaces_match_by_uri_not_prefix() {
        let doc = parse_document(
            b"<x:presence xmlns:x='urn:ietf:params:xml:ns:pidf'><y:person xmlns:y='urn:ietf:params:xml:ns:pidf:data-model'/><tuple/></x:presence>",
        )
        .expect("parses");
        assert!(doc.is(Ns::Pidf, "presence"));
        assert!(doc.children[0].is(Ns::DataModel, "person"));
        assert!(doc.children[1].is(Ns::None, "tuple"));
    }

    #[test]
    fn xml_lang_resolves_to_the_xml_namespace() {
        let doc = parse_document(b"<a xml:lang='de'/>").expect("parses");
        assert_eq!(doc.lang(), Some("de"));
    }

    #[test]
    fn depth_over_limit_is_too_large() {
        let mut s = String::new();
        for _ in 0..=MAX_DEPTH {
            s.push_str("<a>");
        }
        for _ in 0..=MAX_DEPTH {
            s.push_str("</a>");
        }
        assert!(matches!(
            parse_document(s.as_bytes()),
            Err(BodyError::TooLarge(_))
        ));
    }

    #[test]
    fn depth_at_limit_is_accepted() {
        let mut s = String::new();
        for _ in 0..MAX_DEPTH - 1 {
            s.push_str("<a>");
        }
        s.push_str("<a/>");
        for _ in 0..MAX_DEPTH - 1 {
            s.push_str("</a>");
        }
        assert!(parse_document(s.as_bytes()).is_ok());
    }

    #[test]
    fn deep_nesting_far_beyond_the_limit_does_not_overflow() {
        let s = "<a>".repeat(50_000);
        assert!(matches!(
            parse_document(s.as_bytes()),
            Err(BodyError::TooLarge(_))
        ));
    }

    #[test]
    fn document_over_size_limit_is_too_large() {
        let mut s = String::from("<a>");
        s.push_str(&" ".repeat(MAX_DOCUMENT_BYTES));
        s.push_str("</a>");
        assert!(matches!(
            parse_document(s.as_bytes()),
            Err(BodyError::TooLarge(_))
        ));
    }

    #[test]
    fn too_many_attributes_is_too_large() {
        let mut s = String::from("<a");
        for i in 0..=MAX_ATTRIBUTES {
            s.push_str(&format!(" a{i}='x'"));
        }
        s.push_str("/>");
        assert!(matches!(
            parse_document(s.as_bytes()),
            Err(BodyError::TooLarge(_))
        ));
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        assert!(matches!(
            parse_document(b"<a>\xff</a>"),
            Err(BodyError::Malformed(_))
        ));
    }

    #[test]
    fn unclosed_element_is_malformed() {
        assert!(matches!(
            parse_document(b"<a><b></b>"),
            Err(BodyError::Malformed(_))
        ));
    }

    #[test]
    fn mismatched_end_tag_is_malformed() {
        assert!(matches!(
            parse_document(b"<a></b>"),
            Err(BodyError::Malformed(_))
        ));
    }

    #[test]
    fn second_root_element_is_malformed() {
        assert!(matches!(
            parse_document(b"<a/><b/>"),
            Err(BodyError::Malformed(_))
        ));
    }

    #[test]
    fn escaping_round_trips_through_the_reader() {
        let nasty = "a&b<c>d'e\"f\tg\nh\ri\u{1}j";
        let mut s = String::from("<a");
        push_attr(&mut s, "v", nasty);
        s.push('>');
        push_text_escaped(&mut s, nasty);
        s.push_str("</a>");
        let doc = parse_document(s.as_bytes()).expect("parses");
        assert_eq!(doc.text, "a&b<c>d'e\"f\tg\nh\rij");
        assert_eq!(doc.attr("v"), Some("a&b<c>d'e\"f\tg\nh\rij"));
    }
}
