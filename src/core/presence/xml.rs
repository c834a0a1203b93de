//! Shared, tolerant XML reading and writing for the SIP event bodies.
//!
//! Bodies are read into a [`Document`]: its elements in one vector, each pointing at its
//! first child and next sibling by index, names, values and text borrowed from the input
//! where they can be. Reading a body allocates a few vectors, not one per element, and
//! the loop over quick-xml events is iterative: nothing recurses on the input's nesting,
//! and the tree is at most [`MAX_DEPTH`] deep, so walking it cannot exhaust the stack.
//!
//! Tolerance (real PIDF bodies carry these): a UTF-8 byte order mark, the XML declaration,
//! comments, processing instructions and a DOCTYPE are skipped. No entity is ever expanded
//! beyond the five predefined ones and character references (XML 1.0 §4.6); references to
//! other entities (declared in a DOCTYPE or not) are dropped, which also defuses
//! "billion laughs" style bodies. Names are compared by namespace URI, never by prefix
//! (Namespaces in XML 1.0 §4).

use std::borrow::Cow;

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;
use quick_xml::XmlVersion;

use super::BodyError;

/// Deepest element nesting accepted (the root is depth 1).
pub const MAX_DEPTH: usize = 32;
/// Largest body accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Most attributes (namespace declarations included) accepted on one element.
pub const MAX_ATTRIBUTES: usize = 32;
/// Most namespace declarations in scope at once.
const MAX_NAMESPACE_BINDINGS: usize = 64;

/// Namespace URIs of the bodies we read and write.
pub mod ns {
    pub const PIDF: &str = "urn:ietf:params:xml:ns:pidf";
    pub const DATA_MODEL: &str = "urn:ietf:params:xml:ns:pidf:data-model";
    pub const RPID: &str = "urn:ietf:params:xml:ns:pidf:rpid";
    pub const JABBER_CLIENT: &str = "jabber:client";
    pub const WATCHERINFO: &str = "urn:ietf:params:xml:ns:watcherinfo";
    pub const DIALOG_INFO: &str = "urn:ietf:params:xml:ns:dialog-info";
    pub const REGINFO: &str = "urn:ietf:params:xml:ns:reginfo";
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
    Reginfo,
    Xml,
    /// Any other URI, or a prefix that was never declared.
    Other,
}

impl Ns {
    fn from_uri(uri: &str) -> Ns {
        match uri {
            ns::PIDF => Ns::Pidf,
            ns::DATA_MODEL => Ns::DataModel,
            ns::RPID => Ns::Rpid,
            ns::JABBER_CLIENT => Ns::JabberClient,
            ns::WATCHERINFO => Ns::Watcherinfo,
            ns::DIALOG_INFO => Ns::DialogInfo,
            ns::REGINFO => Ns::Reginfo,
            ns::XML => Ns::Xml,
            // `xmlns=''` undeclares the default namespace.
            "" => Ns::None,
            _ => Ns::Other,
        }
    }
}

/// The namespace declarations in scope (Namespaces in XML 1.0 §6), innermost last.
///
/// quick-xml's `NsReader` does the same but doubled the cost of reading a PIDF body;
/// interning URIs to [`Ns`] here is all the parsers need.
#[derive(Default)]
struct Scope<'a> {
    /// (prefix, namespace, depth of the declaring element); prefix `""` is the default.
    bindings: Vec<(Cow<'a, str>, Ns, usize)>,
}

impl<'a> Scope<'a> {
    fn declare(&mut self, prefix: Cow<'a, str>, ns: Ns, depth: usize) -> Result<(), BodyError> {
        if self.bindings.len() >= MAX_NAMESPACE_BINDINGS {
            return Err(BodyError::TooLarge(format!(
                "more than {MAX_NAMESPACE_BINDINGS} namespace declarations in scope"
            )));
        }
        self.bindings.push((prefix, ns, depth));
        Ok(())
    }

    /// The namespace of `prefix` (`""`: the default namespace). `xml` is bound by
    /// definition; an undeclared prefix is [`Ns::Other`], so it never matches.
    fn lookup(&self, prefix: &str) -> Ns {
        if prefix == "xml" {
            return Ns::Xml;
        }
        // Prefixes are short: an inline byte comparison beats a `memcmp` call per
        // binding, which showed up as the top cost of reading a PIDF body.
        let same =
            |p: &str| p.len() == prefix.len() && p.bytes().zip(prefix.bytes()).all(|(a, b)| a == b);
        match self.bindings.iter().rev().find(|(p, _, _)| same(p)) {
            Some((_, ns, _)) => *ns,
            None if prefix.is_empty() => Ns::None,
            None => Ns::Other,
        }
    }

    /// Drops the declarations of elements deeper than `depth` (they have been closed).
    fn close_to(&mut self, depth: usize) {
        while self.bindings.last().is_some_and(|(_, _, d)| *d > depth) {
            self.bindings.pop();
        }
    }
}

/// Splits `p:local` into (`p`, `local`); an unprefixed name has prefix `""`.
fn split_qname(qname: &str) -> (&str, &str) {
    // A byte scan: names are short, and ':' is ASCII so the split is on a char boundary.
    match qname.bytes().position(|b| b == b':') {
        Some(i) => (&qname[..i], &qname[i + 1..]),
        None => ("", qname),
    }
}

/// One attribute, namespace declarations excluded.
#[derive(Clone, Debug)]
pub struct Attr<'a> {
    pub ns: Ns,
    /// Local name.
    pub name: Cow<'a, str>,
    pub value: Cow<'a, str>,
}

/// A parsed body. Element 0 is the root; [`Document::root`] is where reading starts.
#[derive(Clone, Debug)]
pub struct Document<'a> {
    nodes: Vec<Node<'a>>,
    /// Every element's attributes, each element's contiguous.
    attrs: Vec<Attr<'a>>,
}

/// No element (a missing first child or next sibling).
const NONE: u32 = u32::MAX;

/// One element: its resolved name, its attributes (a range of [`Document::attrs`]), its
/// links, and the concatenation of its own character data (entity and character
/// references resolved, leading white space dropped: every reader trims it). Text
/// borrows from the input when it came in one piece.
#[derive(Clone, Debug)]
struct Node<'a> {
    ns: Ns,
    /// Local name, borrowed from the input.
    name: Cow<'a, str>,
    attrs: (u32, u32),
    first_child: u32,
    next_sibling: u32,
    text: Cow<'a, str>,
}

impl<'a> Document<'a> {
    /// The root element.
    pub fn root(&self) -> Element<'_, 'a> {
        Element {
            doc: self,
            index: 0,
        }
    }
}

/// One element of a [`Document`], a cheap copyable handle: what it reads borrows from the
/// document (`'d`), which borrows from the input (`'a`).
#[derive(Clone, Copy)]
pub struct Element<'d, 'a> {
    doc: &'d Document<'a>,
    index: u32,
}

impl std::fmt::Debug for Element<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Element")
            .field("ns", &self.ns())
            .field("name", &self.name())
            .field("attrs", &self.attrs())
            .field("text", &self.text())
            .finish_non_exhaustive()
    }
}

impl<'d, 'a> Element<'d, 'a> {
    fn node(&self) -> &'d Node<'a> {
        &self.doc.nodes[self.index as usize]
    }

    pub fn ns(&self) -> Ns {
        self.node().ns
    }

    /// Local name.
    pub fn name(&self) -> &'d str {
        &self.node().name
    }

    /// Own character data, leading white space dropped.
    pub fn text(&self) -> &'d str {
        &self.node().text
    }

    /// Attributes, namespace declarations excluded.
    pub fn attrs(&self) -> &'d [Attr<'a>] {
        let (start, end) = self.node().attrs;
        &self.doc.attrs[start as usize..end as usize]
    }

    /// Child elements, in document order.
    pub fn children(&self) -> Children<'d, 'a> {
        Children {
            doc: self.doc,
            next: self.node().first_child,
        }
    }

    /// Whether this element is `{ns}name`.
    pub fn is(&self, ns: Ns, name: &str) -> bool {
        let node = self.node();
        node.ns == ns && node.name == name
    }

    /// An unqualified attribute (`<tuple id=..>`): attributes without a prefix are in no
    /// namespace, whatever the element's default namespace is.
    pub fn attr(&self, name: &str) -> Option<&'d str> {
        self.attr_ns(Ns::None, name)
    }

    pub fn attr_ns(&self, ns: Ns, name: &str) -> Option<&'d str> {
        self.attrs()
            .iter()
            .find(|a| a.ns == ns && a.name == name)
            .map(|a| &*a.value)
    }

    /// `xml:lang` of this element, if written on it.
    pub fn lang(&self) -> Option<&'d str> {
        self.attr_ns(Ns::Xml, "lang")
    }

    /// Character data with XML white space trimmed at both ends.
    pub fn trimmed(&self) -> &'d str {
        trim_xml(self.text())
    }

    /// Trimmed character data, `None` when empty.
    pub fn value(&self) -> Option<String> {
        let t = self.trimmed();
        (!t.is_empty()).then(|| t.to_string())
    }

    /// Whether the element carries `mustUnderstand='1'|'true'` (RFC 3863 §4.1.3); the
    /// attribute may be unqualified or in the PIDF namespace.
    pub fn must_understand(&self) -> bool {
        self.attrs()
            .iter()
            .filter(|a| a.name == "mustUnderstand" && matches!(a.ns, Ns::None | Ns::Pidf))
            .any(|a| matches!(trim_xml(&a.value), "1" | "true"))
    }
}

/// The child elements of one element, in document order.
#[derive(Clone)]
pub struct Children<'d, 'a> {
    doc: &'d Document<'a>,
    next: u32,
}

impl<'d, 'a> Iterator for Children<'d, 'a> {
    type Item = Element<'d, 'a>;

    fn next(&mut self) -> Option<Element<'d, 'a>> {
        if self.next == NONE {
            return None;
        }
        let el = Element {
            doc: self.doc,
            index: self.next,
        };
        self.next = el.node().next_sibling;
        Some(el)
    }
}

/// Trims XML white space (S production: space, tab, CR, LF) only.
pub fn trim_xml(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

fn malformed(e: impl std::fmt::Display) -> BodyError {
    BodyError::Malformed(e.to_string())
}

/// Reads a whole document, enforcing the limits above.
///
/// Errors: [`BodyError::TooLarge`] past a limit, [`BodyError::Malformed`] for anything that
/// is not a single well-formed UTF-8 element tree.
pub fn parse_document(bytes: &[u8]) -> Result<Document<'_>, BodyError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(BodyError::TooLarge(format!(
            "{} bytes, limit {MAX_DOCUMENT_BYTES}",
            bytes.len()
        )));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| malformed(format!("not UTF-8: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    let mut reader = Reader::from_str(text);
    let mut scope = Scope::default();
    // About one element per 40 bytes in presence bodies: one allocation for most.
    let mut doc = Document {
        nodes: Vec::with_capacity(text.len() / 40 + 1),
        attrs: Vec::with_capacity(text.len() / 80 + 1),
    };

    // Open elements, innermost last, each with its last child so far: the explicit
    // stack replaces recursion.
    let mut open: Vec<(u32, u32)> = Vec::with_capacity(8);
    let mut root_closed = false;
    loop {
        let event = reader.read_event().map_err(malformed)?;
        match event {
            Event::Start(start) | Event::Empty(start) if root_closed => {
                return Err(malformed(format!(
                    "element <{}> after the root element",
                    start.name().into_inner()
                )));
            }
            Event::Start(start) => {
                let index = add_element(&mut doc, text, &mut scope, open.len() + 1, &start)?;
                link_child(&mut doc, &mut open, index);
                open.push((index, NONE));
            }
            Event::Empty(start) => {
                let index = add_element(&mut doc, text, &mut scope, open.len() + 1, &start)?;
                link_child(&mut doc, &mut open, index);
                scope.close_to(open.len());
                root_closed = open.is_empty();
            }
            Event::End(_) => {
                // quick-xml checks that end names match; an unmatched end is an error there.
                open.pop()
                    .ok_or_else(|| malformed("end tag without a start tag"))?;
                scope.close_to(open.len());
                root_closed = open.is_empty();
            }
            Event::Text(t) => push_text(&mut doc, &open, t.xml10_content())?,
            Event::CData(c) => push_text(&mut doc, &open, c.xml10_content())?,
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(malformed)? {
                    Some(c) => Some(Cow::Owned(c.to_string())),
                    None => resolve_predefined_entity(&r).map(Cow::Borrowed),
                };
                match resolved {
                    Some(s) => push_text(&mut doc, &open, s)?,
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
    if !open.is_empty() {
        return Err(malformed("document ends inside an element"));
    }
    if doc.nodes.is_empty() {
        return Err(malformed("no root element"));
    }
    Ok(doc)
}

/// Makes element `index` the last child of the innermost open element (the root has no
/// parent: it is element 0).
fn link_child(doc: &mut Document<'_>, open: &mut [(u32, u32)], index: u32) {
    if let Some((parent, last)) = open.last_mut() {
        match *last {
            NONE => doc.nodes[*parent as usize].first_child = index,
            prev => doc.nodes[prev as usize].next_sibling = index,
        }
        *last = index;
    }
}

fn push_text<'a>(
    doc: &mut Document<'a>,
    open: &[(u32, u32)],
    s: Cow<'a, str>,
) -> Result<(), BodyError> {
    let Some((top, _)) = open.last() else {
        return match trim_xml(&s).is_empty() {
            true => Ok(()),
            false => Err(malformed("character data outside the root element")),
        };
    };
    let text = &mut doc.nodes[*top as usize].text;
    if text.is_empty() {
        // Leading white space is trimmed by every reader: skipping it here saves the
        // allocation for the indentation between child elements.
        if !trim_xml(&s).is_empty() {
            *text = s;
        }
    } else {
        text.to_mut().push_str(&s);
    }
    Ok(())
}

/// Adds the element of a start tag at `depth` (its attributes included) and gives its
/// index, declaring its namespace declarations in `scope` first (they apply to the
/// element's own name and attributes).
fn add_element<'a>(
    doc: &mut Document<'a>,
    input: &'a str,
    scope: &mut Scope<'a>,
    depth: usize,
    start: &BytesStart<'_>,
) -> Result<u32, BodyError> {
    if depth > MAX_DEPTH {
        return Err(BodyError::TooLarge(format!(
            "elements nested deeper than {MAX_DEPTH}"
        )));
    }
    let (prefix, local) = split_qname(start.name().into_inner());
    let name = reborrow(input, local);
    let first_attr = doc.attrs.len();
    // Attributes whose prefix can only be resolved once all declarations are seen.
    let mut pending: Vec<(usize, Cow<'a, str>)> = Vec::new();
    // Qualified names seen so far: attributes are unique per element (XML 1.0 §3.1, a
    // well-formedness constraint). Checked here, without quick-xml's per-element
    // allocation for the same check.
    let mut first_keys: [&str; 8] = [""; 8];
    let mut more_keys: Vec<&str> = Vec::new();
    for (n, attr) in start.attributes().with_checks(false).enumerate() {
        if n >= MAX_ATTRIBUTES {
            return Err(BodyError::TooLarge(format!(
                "more than {MAX_ATTRIBUTES} attributes on <{name}>"
            )));
        }
        let attr = attr.map_err(malformed)?;
        let key = attr.key.into_inner();
        if first_keys[..n.min(8)].contains(&key) || more_keys.contains(&key) {
            return Err(malformed(format!("attribute {key} repeated on <{name}>")));
        }
        match first_keys.get_mut(n) {
            Some(slot) => *slot = key,
            None => more_keys.push(key),
        }
        let value = attr_value(input, &attr)?;
        let (attr_prefix, attr_local) = split_qname(attr.key.into_inner());
        match (attr_prefix, attr_local) {
            ("", "xmlns") => scope.declare(Cow::Borrowed(""), Ns::from_uri(&value), depth)?,
            ("xmlns", p) => scope.declare(reborrow(input, p), Ns::from_uri(&value), depth)?,
            // Unprefixed attributes are in no namespace (Namespaces in XML 1.0 §6.2).
            ("", _) => doc.attrs.push(Attr {
                ns: Ns::None,
                name: reborrow(input, attr_local),
                value,
            }),
            ("xml", _) => doc.attrs.push(Attr {
                ns: Ns::Xml,
                name: reborrow(input, attr_local),
                value,
            }),
            (p, _) => {
                pending.push((doc.attrs.len(), reborrow(input, p)));
                doc.attrs.push(Attr {
                    ns: Ns::Other,
                    name: reborrow(input, attr_local),
                    value,
                });
            }
        }
    }
    for (i, p) in pending {
        if let Some(a) = doc.attrs.get_mut(i) {
            a.ns = scope.lookup(&p);
        }
    }
    // Bounded by MAX_DOCUMENT_BYTES long before u32 is; checked all the same.
    let to_u32 =
        |n: usize| u32::try_from(n).map_err(|_| BodyError::TooLarge("too many elements".into()));
    let index = to_u32(doc.nodes.len())?;
    let attrs_range = (to_u32(first_attr)?, to_u32(doc.attrs.len())?);
    doc.nodes.push(Node {
        ns: scope.lookup(prefix),
        name,
        attrs: attrs_range,
        first_child: NONE,
        next_sibling: NONE,
        text: Cow::Borrowed(""),
    });
    Ok(index)
}

/// An attribute value with references resolved and white space normalised (XML 1.0
/// §3.3.3); the common value with neither is copied as is.
fn attr_value<'a>(input: &'a str, attr: &Attribute<'_>) -> Result<Cow<'a, str>, BodyError> {
    if !attr.value.contains(['&', '\t', '\n', '\r']) {
        return Ok(reborrow(input, &attr.value));
    }
    attr.normalized_value_with(XmlVersion::Implicit1_0, 1, |entity| {
        // Same rule as in text: predefined entities only, others vanish.
        resolve_predefined_entity(entity).or(Some(""))
    })
    .map(|v| Cow::Owned(v.into_owned()))
    .map_err(malformed)
}

/// `s` as a borrow of `input` when it is a slice of it (quick-xml hands out names and
/// attribute values borrowed from the event, not from the input, although with a string
/// input they point into it); a copy otherwise. Address arithmetic only, no `unsafe`:
/// the borrow is taken with `str::get` and checked to be the very same bytes.
fn reborrow<'a>(input: &'a str, s: &str) -> Cow<'a, str> {
    let start = (s.as_ptr() as usize).wrapping_sub(input.as_ptr() as usize);
    match start
        .checked_add(s.len())
        .and_then(|end| input.get(start..end))
    {
        Some(sub) if std::ptr::eq(sub.as_ptr(), s.as_ptr()) => Cow::Borrowed(sub),
        _ => Cow::Owned(s.to_string()),
    }
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

    /// The element reached from the root by child positions.
    fn child<'d, 'a>(doc: &'d Document<'a>, path: &[usize]) -> Element<'d, 'a> {
        path.iter().fold(doc.root(), |el, i| {
            el.children().nth(*i).expect("child exists")
        })
    }

    #[test]
    fn children_come_in_document_order_with_their_own_text_and_attributes() {
        let doc = parse_document(b"<r><a x='1'>one<b/>two</a><c/><d y='2' z='3'>four</d></r>")
            .expect("parses");
        let root = doc.root();
        let names: Vec<&str> = root.children().map(|c| c.name()).collect();
        assert_eq!(names, vec!["a", "c", "d"]);
        assert_eq!(child(&doc, &[0]).text(), "onetwo");
        assert_eq!(child(&doc, &[0]).attr("x"), Some("1"));
        assert_eq!(child(&doc, &[0, 0]).name(), "b");
        assert_eq!(child(&doc, &[0, 0]).children().count(), 0);
        assert!(child(&doc, &[1]).attrs().is_empty());
        assert_eq!(child(&doc, &[2]).attr("z"), Some("3"));
        assert_eq!(child(&doc, &[2]).text(), "four");
        assert_eq!(root.text(), "");
    }

    #[test]
    fn reborrow_borrows_slices_of_the_input_and_copies_anything_else() {
        let input = "<a b='c'/>";
        assert!(matches!(reborrow(input, &input[3..4]), Cow::Borrowed("b")));
        let elsewhere = String::from("b");
        assert!(matches!(reborrow(input, &elsewhere), Cow::Owned(ref s) if s == "b"));
        assert!(matches!(
            reborrow(input, ""),
            Cow::Borrowed("") | Cow::Owned(_)
        ));
    }

    #[test]
    fn names_and_plain_attribute_values_borrow_from_the_input() {
        let doc = parse_document(b"<a b='c'/>").expect("parses");
        assert!(matches!(doc.nodes[0].name, Cow::Borrowed("a")));
        assert!(matches!(doc.root().attrs()[0].value, Cow::Borrowed("c")));
    }

    #[test]
    fn utf8_bom_is_skipped() {
        let doc = parse_document(b"\xEF\xBB\xBF<a xmlns='urn:x'/>").expect("parses");
        assert_eq!(doc.root().name(), "a");
    }

    #[test]
    fn comments_pi_and_doctype_are_ignored() {
        let doc = parse_document(
            b"<?xml version='1.0'?><!DOCTYPE a [<!ENTITY e 'boom'>]><!-- c --><?pi x?><a>x<!-- y -->z</a>",
        )
        .expect("parses");
        assert_eq!(doc.root().text(), "xz");
    }

    #[test]
    fn undeclared_and_dtd_entities_are_not_expanded() {
        let doc = parse_document(b"<!DOCTYPE a [<!ENTITY e 'boom'>]><a>1&e;2</a>").expect("parses");
        assert_eq!(doc.root().text(), "12");
    }

    #[test]
    fn predefined_entities_and_char_refs_are_resolved_in_text_and_attributes() {
        let doc =
            parse_document(b"<a v='&lt;&#10;&#x41;&unknown;'>&amp;&#233;&gt;</a>").expect("parses");
        assert_eq!(doc.root().text(), "&\u{e9}>");
        assert_eq!(doc.root().attr("v"), Some("<\nA"));
    }

    #[test]
    fn namespaces_match_by_uri_not_prefix() {
        let doc = parse_document(
            b"<x:presence xmlns:x='urn:ietf:params:xml:ns:pidf'><y:person xmlns:y='urn:ietf:params:xml:ns:pidf:data-model'/><tuple/></x:presence>",
        )
        .expect("parses");
        assert!(doc.root().is(Ns::Pidf, "presence"));
        assert!(child(&doc, &[0]).is(Ns::DataModel, "person"));
        assert!(child(&doc, &[1]).is(Ns::None, "tuple"));
    }

    #[test]
    fn namespace_declarations_end_with_their_element() {
        let doc = parse_document(
            b"<a xmlns='urn:ietf:params:xml:ns:pidf'><b xmlns='jabber:client'><c/></b><d/></a>",
        )
        .expect("parses");
        assert!(child(&doc, &[0]).is(Ns::JabberClient, "b"));
        assert!(child(&doc, &[0, 0]).is(Ns::JabberClient, "c"));
        assert!(
            child(&doc, &[1]).is(Ns::Pidf, "d"),
            "sibling back in the outer default"
        );
    }

    #[test]
    fn empty_default_namespace_undeclares_it() {
        let doc = parse_document(b"<a xmlns='urn:ietf:params:xml:ns:pidf'><b xmlns=''/></a>")
            .expect("parses");
        assert!(child(&doc, &[0]).is(Ns::None, "b"));
    }

    #[test]
    fn prefixed_attribute_resolves_with_a_declaration_written_after_it() {
        let doc =
            parse_document(b"<a p:x='1' xmlns:p='urn:ietf:params:xml:ns:pidf'/>").expect("parses");
        assert_eq!(doc.root().attr_ns(Ns::Pidf, "x"), Some("1"));
        assert_eq!(
            doc.root().attr("x"),
            None,
            "prefixed attributes are not unqualified ones"
        );
    }

    #[test]
    fn undeclared_prefix_matches_no_namespace() {
        let doc = parse_document(b"<p:presence/>").expect("parses");
        assert_eq!(doc.root().ns(), Ns::Other);
    }

    #[test]
    fn too_many_namespace_declarations_in_scope_is_too_large() {
        let mut s = String::new();
        for d in 0..8 {
            s.push_str("<a");
            for i in 0..10 {
                s.push_str(&format!(" xmlns:p{d}x{i}='urn:x'"));
            }
            s.push('>');
        }
        for _ in 0..8 {
            s.push_str("</a>");
        }
        assert!(matches!(
            parse_document(s.as_bytes()),
            Err(BodyError::TooLarge(_))
        ));
    }

    #[test]
    fn xml_lang_resolves_to_the_xml_namespace() {
        let doc = parse_document(b"<a xml:lang='de'/>").expect("parses");
        assert_eq!(doc.root().lang(), Some("de"));
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
    fn repeated_attribute_is_malformed() {
        assert!(matches!(
            parse_document(b"<a x='1' y='2' x='3'/>"),
            Err(BodyError::Malformed(_))
        ));
        assert!(matches!(
            parse_document(b"<a xmlns:p='urn:x' xmlns:p='urn:y'/>"),
            Err(BodyError::Malformed(_))
        ));
        let mut many = String::from("<a");
        for i in 0..12 {
            many.push_str(&format!(" a{i}='x'"));
        }
        assert!(parse_document(format!("{many}/>").as_bytes()).is_ok());
        assert!(matches!(
            parse_document(format!("{many} a10='y'/>").as_bytes()),
            Err(BodyError::Malformed(_))
        ));
        // Same local name, different prefixes: distinct qualified names.
        assert!(parse_document(b"<a p:x='1' q:x='2' xmlns:p='urn:p' xmlns:q='urn:q'/>").is_ok());
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
        assert_eq!(doc.root().text(), "a&b<c>d'e\"f\tg\nh\rij");
        assert_eq!(doc.root().attr("v"), Some("a&b<c>d'e\"f\tg\nh\rij"));
    }
}
