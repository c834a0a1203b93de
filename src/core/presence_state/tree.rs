//! A small owned, namespace-aware XML tree for composing documents out of fragments of
//! other documents (RFC 3903 §4 composition; Namespaces in XML 1.0).
//!
//! Why not `presence::xml`: that reader interns every namespace it does not know to
//! `Ns::Other` and forgets prefixes, which is right for reading but makes unknown
//! extensions impossible to write back. This tree keeps, for every element and attribute,
//! the namespace URI it resolved to, the prefix it was written with, and the namespace
//! declarations written on the element, so a fragment moved into another document can be
//! written with exactly the declarations it needs ([`write_document`]).
//!
//! Input is always validated by `presence::pidf::parse_pidf` /
//! `presence::dialog_info::parse_dialog_info` first (size, depth and attribute limits,
//! well-formedness); [`parse`] repeats only what it needs and never panics. Reading rules
//! match `presence::xml`: comments, processing instructions, the declaration and a DOCTYPE
//! are dropped; only the predefined entities and character references are resolved,
//! other references vanish; text that is only white space is dropped (every reader of
//! these bodies trims it).

use crate::core::presence::{push_attr_escaped, push_text_escaped};
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;
use quick_xml::XmlVersion;

/// A qualified name: the namespace URI it resolved to (`""`: no namespace; a prefix that
/// was never declared makes [`parse`] refuse the document), the prefix it was written with (`""`: none) and the local
/// name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Name {
    pub ns: String,
    pub prefix: String,
    pub local: String,
}

impl Name {
    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.ns == ns && self.local == local
    }
}

/// One attribute; namespace declarations are kept apart in [`Elem::decls`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Attr {
    pub name: Name,
    /// Unescaped value.
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    Elem(Elem),
    /// Unescaped character data (never only white space).
    Text(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Elem {
    pub name: Name,
    pub attrs: Vec<Attr>,
    /// Declarations written on this element in its source: (prefix, URI), prefix `""`
    /// for the default namespace. Re-emitted where the output scope differs, so a prefix
    /// used only inside attribute values or text (QName content) keeps its binding when
    /// it was declared on the element itself.
    pub decls: Vec<(String, String)>,
    pub children: Vec<Node>,
}

impl Elem {
    /// A new element without attributes or children.
    pub fn new(ns: &str, prefix: &str, local: &str) -> Elem {
        Elem {
            name: Name {
                ns: ns.to_string(),
                prefix: prefix.to_string(),
                local: local.to_string(),
            },
            attrs: Vec::new(),
            decls: Vec::new(),
            children: Vec::new(),
        }
    }

    /// An unqualified attribute's value.
    pub fn attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name.prefix.is_empty() && a.name.local == local)
            .map(|a| a.value.as_str())
    }

    /// Sets an unqualified attribute, replacing one of the same name.
    pub fn set_attr(&mut self, local: &str, value: &str) {
        match self
            .attrs
            .iter_mut()
            .find(|a| a.name.prefix.is_empty() && a.name.local == local)
        {
            Some(a) => a.value = value.to_string(),
            None => self.attrs.push(Attr {
                name: Name {
                    ns: String::new(),
                    prefix: String::new(),
                    local: local.to_string(),
                },
                value: value.to_string(),
            }),
        }
    }

    /// Child elements in document order.
    pub fn elements(&self) -> impl Iterator<Item = &Elem> {
        self.children.iter().filter_map(|n| match n {
            Node::Elem(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The `id` attribute, XML white space trimmed.
    pub fn id(&self) -> Option<&str> {
        self.attr("id").map(trim_xml)
    }
}

/// Trims XML white space (S production) only.
pub(crate) fn trim_xml(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

fn is_blank(s: &str) -> bool {
    trim_xml(s).is_empty()
}

/// Splits `p:local`; an unprefixed name has prefix `""`.
fn split_qname(q: &str) -> (&str, &str) {
    match q.split_once(':') {
        Some((p, l)) => (p, l),
        None => ("", q),
    }
}

/// In-scope declarations, innermost last: (prefix, URI, depth of the declaring element).
#[derive(Default)]
struct Scope {
    bindings: Vec<(String, String, usize)>,
}

impl Scope {
    fn lookup(&self, prefix: &str) -> String {
        if prefix == "xml" {
            return "http://www.w3.org/XML/1998/namespace".to_string();
        }
        self.bindings
            .iter()
            .rev()
            .find(|(p, _, _)| p == prefix)
            .map(|(_, u, _)| u.clone())
            .unwrap_or_default()
    }

    fn close_to(&mut self, depth: usize) {
        while self.bindings.last().is_some_and(|(_, _, d)| *d > depth) {
            self.bindings.pop();
        }
    }
}

/// Reads a whole document into its root element. `None` when the input is not one
/// well-formed, namespace-well-formed UTF-8 element tree (callers validate bodies before, so this is a second
/// line of defence, never a panic).
pub(crate) fn parse(bytes: &[u8]) -> Option<Elem> {
    let text = std::str::from_utf8(bytes).ok()?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = Reader::from_str(text);
    let mut scope = Scope::default();
    let mut open: Vec<Elem> = Vec::new();
    let mut root: Option<Elem> = None;
    loop {
        match reader.read_event().ok()? {
            Event::Start(start) => {
                if root.is_some() {
                    return None;
                }
                let depth = open.len() + 1;
                open.push(start_elem(&start, &mut scope, depth)?);
            }
            Event::Empty(start) => {
                if root.is_some() {
                    return None;
                }
                let depth = open.len() + 1;
                let el = start_elem(&start, &mut scope, depth)?;
                scope.close_to(open.len());
                match open.last_mut() {
                    Some(parent) => parent.children.push(Node::Elem(el)),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let el = open.pop()?;
                scope.close_to(open.len());
                match open.last_mut() {
                    Some(parent) => parent.children.push(Node::Elem(el)),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => push_text(&mut open, &t.xml10_content())?,
            Event::CData(c) => push_text(&mut open, &c.xml10_content())?,
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().ok()? {
                    Some(c) => Some(c.to_string()),
                    None => resolve_predefined_entity(&r).map(str::to_string),
                };
                if let Some(s) = resolved {
                    push_text(&mut open, &s)?;
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    if !open.is_empty() {
        return None;
    }
    root
}

/// Appends text to the innermost open element, merging with a preceding text node;
/// white-space-only runs are dropped once the element is closed (see [`parse`]).
fn push_text(open: &mut [Elem], s: &str) -> Option<()> {
    let Some(top) = open.last_mut() else {
        // Outside the root only white space is allowed.
        return is_blank(s).then_some(());
    };
    match top.children.last_mut() {
        Some(Node::Text(t)) => t.push_str(s),
        _ if is_blank(s) => {}
        _ => top.children.push(Node::Text(s.to_string())),
    }
    Some(())
}

fn start_elem(start: &BytesStart<'_>, scope: &mut Scope, depth: usize) -> Option<Elem> {
    let qname = start.name().into_inner();
    let (prefix, local) = split_qname(qname);
    let mut decls = Vec::new();
    let mut raw_attrs: Vec<(String, String, String)> = Vec::new();
    for attr in start.attributes().with_checks(true) {
        let attr = attr.ok()?;
        let key = attr.key.into_inner();
        let value = attr
            .normalized_value_with(XmlVersion::Implicit1_0, 1, |e| {
                resolve_predefined_entity(e).or(Some(""))
            })
            .ok()?
            .into_owned();
        match split_qname(key) {
            ("", "xmlns") => decls.push((String::new(), value)),
            ("xmlns", p) => decls.push((p.to_string(), value)),
            (p, l) => raw_attrs.push((p.to_string(), l.to_string(), value)),
        }
    }
    for (p, u) in &decls {
        scope.bindings.push((p.clone(), u.clone(), depth));
    }
    let attrs: Vec<Attr> = raw_attrs
        .into_iter()
        .map(|(p, l, value)| Attr {
            name: Name {
                // Unprefixed attributes are in no namespace (Namespaces in XML 1.0 §6.2).
                ns: if p.is_empty() {
                    String::new()
                } else {
                    scope.lookup(&p)
                },
                prefix: p,
                local: l,
            },
            value,
        })
        .collect();
    // A prefix that was never declared cannot be written back correctly: such a document
    // is not namespace-well-formed (Namespaces in XML 1.0 §7) and is refused.
    let ns = scope.lookup(prefix);
    if !prefix.is_empty() && ns.is_empty() {
        return None;
    }
    if attrs
        .iter()
        .any(|a: &Attr| !a.name.prefix.is_empty() && a.name.ns.is_empty())
    {
        return None;
    }
    Some(Elem {
        name: Name {
            ns,
            prefix: prefix.to_string(),
            local: local.to_string(),
        },
        attrs,
        decls,
        children: Vec::new(),
    })
}

/// Writes `root` as a complete document: the XML declaration, then the element with every
/// namespace declaration it and its descendants need, declared on the element that first
/// needs it (or differs from the binding in scope there).
pub(crate) fn write_document(root: &Elem) -> String {
    let mut w = Writer {
        out: String::with_capacity(1024),
        scope: Vec::new(),
    };
    w.out.push_str("<?xml version='1.0' encoding='UTF-8'?>\n");
    w.elem(root);
    w.out.push('\n');
    w.out
}

struct Writer {
    out: String,
    /// (prefix, URI), innermost last.
    scope: Vec<(String, String)>,
}

impl Writer {
    fn bound(&self, prefix: &str) -> &str {
        self.scope
            .iter()
            .rev()
            .find(|(p, _)| p == prefix)
            .map(|(_, u)| u.as_str())
            .unwrap_or("")
    }

    /// Declares `prefix` → `uri` on the element being written unless already so bound.
    fn need(&mut self, prefix: &str, uri: &str) {
        if prefix == "xml" || prefix == "xmlns" {
            return;
        }
        // `xmlns:p=''` is not allowed (Namespaces in XML 1.0 §3): an undeclared prefix in
        // the source stays undeclared.
        if !prefix.is_empty() && uri.is_empty() {
            return;
        }
        if self.bound(prefix) == uri {
            return;
        }
        if prefix.is_empty() {
            self.out.push_str(" xmlns='");
        } else {
            self.out.push_str(" xmlns:");
            self.out.push_str(prefix);
            self.out.push_str("='");
        }
        push_attr_escaped(&mut self.out, uri);
        self.out.push('\'');
        self.scope.push((prefix.to_string(), uri.to_string()));
    }

    fn qname(&mut self, n: &Name) {
        if !n.prefix.is_empty() {
            self.out.push_str(&n.prefix);
            self.out.push(':');
        }
        self.out.push_str(&n.local);
    }

    fn elem(&mut self, e: &Elem) {
        let mark = self.scope.len();
        self.out.push('<');
        self.qname(&e.name);
        // The element's own name first: its binding must not be shadowed by a source
        // declaration of the same prefix (impossible in a well-formed source, cheap here).
        self.need(&e.name.prefix, &e.name.ns);
        for (p, u) in &e.decls {
            if *p != e.name.prefix {
                self.need(p, u);
            }
        }
        for a in &e.attrs {
            if !a.name.prefix.is_empty() {
                self.need(&a.name.prefix, &a.name.ns);
            }
        }
        for a in &e.attrs {
            self.out.push(' ');
            self.qname(&a.name);
            self.out.push_str("='");
            push_attr_escaped(&mut self.out, &a.value);
            self.out.push('\'');
        }
        if e.children.is_empty() {
            self.out.push_str("/>");
        } else {
            self.out.push('>');
            for c in &e.children {
                match c {
                    Node::Elem(child) => self.elem(child),
                    Node::Text(t) => push_text_escaped(&mut self.out, t),
                }
            }
            self.out.push_str("</");
            self.qname(&e.name);
            self.out.push('>');
        }
        self.scope.truncate(mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_written_alone_redeclares_the_prefixes_it_uses() {
        let root =
            parse(b"<a xmlns='urn:a' xmlns:p='urn:p' xmlns:q='urn:q'><p:b q:x='1'><c/></p:b></a>")
                .expect("parses");
        let b = root.elements().next().expect("child").clone();
        let out = write_document(&b);
        assert!(
            out.contains("<p:b xmlns:p='urn:p' xmlns:q='urn:q' q:x='1'>"),
            "{out}"
        );
        assert!(out.contains("<c xmlns='urn:a'/>"), "{out}");
        let again = parse(out.as_bytes()).expect("reparses");
        assert_eq!(again.name.ns, "urn:p");
        assert_eq!(again.attrs[0].name.ns, "urn:q");
        assert_eq!(again.elements().next().expect("c").name.ns, "urn:a");
    }

    #[test]
    fn no_namespace_child_under_a_default_namespace_gets_xmlns_empty() {
        let mut root = Elem::new("urn:a", "", "a");
        root.children.push(Node::Elem(Elem::new("", "", "plain")));
        let out = write_document(&root);
        assert!(out.contains("<plain xmlns=''/>"), "{out}");
        let again = parse(out.as_bytes()).expect("reparses");
        assert_eq!(again.elements().next().expect("plain").name.ns, "");
    }

    #[test]
    fn text_and_attributes_round_trip_with_escapes() {
        let root = parse(b"<a v='&lt;&amp;&apos;'>x &amp; y<![CDATA[<z>]]>&#233;</a>").expect("ok");
        let out = write_document(&root);
        let again = parse(out.as_bytes()).expect("reparses");
        assert_eq!(again, root);
        assert_eq!(root.children, vec![Node::Text("x & y<z>\u{e9}".into())]);
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        for bad in [
            &b"<a>"[..],
            b"</a>",
            b"<a/><b/>",
            b"\xff",
            b"",
            b"text",
            b"<a x='1' x='2'/>",
            b"<p:a/>",
            b"<a q:x='1'/>",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
