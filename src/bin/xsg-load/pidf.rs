//! PIDF bodies the tool sends (RFC 3863) and the two facts it reads back from the
//! gateway's bodies: the `<note>` carrying `seq N`, and the basic status.

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;
use quick_xml::reader::Reader;

/// The marker every measured update carries in its note / status text.
pub const SEQ_PREFIX: &str = "seq ";

/// Escapes text for XML character data and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// A one-tuple PIDF document (RFC 3863 §4) with `basic` open or closed and a note.
pub fn build(entity: &str, tuple_id: &str, open: bool, note: &str) -> String {
    format!(
        "<?xml version='1.0' encoding='UTF-8'?>\n\
<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='{}'>\
<tuple id='{}'><status><basic>{}</basic></status><note>{}</note></tuple></presence>",
        escape(entity),
        escape(tuple_id),
        if open { "open" } else { "closed" },
        escape(note)
    )
}

/// What the tool reads from a PIDF body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Text of every `<note>` (any namespace prefix), in document order.
    pub notes: Vec<String>,
    /// `true` when any `<basic>` says open.
    pub open: bool,
}

impl Summary {
    /// The highest `seq N` among the notes (several tuples may carry several).
    pub fn seq(&self) -> Option<u64> {
        self.notes.iter().filter_map(|n| seq_of(n)).max()
    }
}

/// Parses `seq N` (surrounding space allowed).
pub fn seq_of(text: &str) -> Option<u64> {
    text.trim().strip_prefix(SEQ_PREFIX)?.trim().parse().ok()
}

/// Reads notes and basic status from a body. A malformed body gives an error text.
pub fn read(body: &[u8]) -> Result<Summary, String> {
    let mut reader = Reader::from_reader(body);
    let mut buf = Vec::new();
    let mut summary = Summary::default();
    // Which element's text we are collecting: 1 = note, 2 = basic.
    let mut collecting = 0u8;
    let mut text = String::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => {
                collecting = match e.local_name().as_ref() {
                    "note" => 1,
                    "basic" => 2,
                    _ => 0,
                };
                text.clear();
            }
            Ok(Event::Text(t)) if collecting != 0 => text.push_str(&t.xml10_content()),
            Ok(Event::GeneralRef(r)) if collecting != 0 => {
                if let Some(s) = resolve_predefined_entity(&r) {
                    text.push_str(s);
                } else if let Ok(Some(c)) = r.resolve_char_ref() {
                    text.push(c);
                }
            }
            Ok(Event::End(_)) => {
                match collecting {
                    1 => summary.notes.push(std::mem::take(&mut text)),
                    2 => summary.open |= text.trim() == "open",
                    _ => {}
                }
                collecting = 0;
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("bad PIDF: {e}")),
        }
        buf.clear();
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_document_reads_back_its_seq_and_status() {
        let doc = build("pres:p1@sip.test", "t1", true, "seq 42");
        let s = read(doc.as_bytes()).expect("reads");
        assert_eq!(s.seq(), Some(42));
        assert!(s.open);
    }

    #[test]
    fn closed_document_is_not_open() {
        let doc = build("pres:p1@sip.test", "t1", false, "seq 1");
        assert!(!read(doc.as_bytes()).expect("reads").open);
    }

    #[test]
    fn prefixed_note_with_lang_and_several_tuples_gives_highest_seq() {
        let doc = "<p:presence xmlns:p='urn:ietf:params:xml:ns:pidf' entity='pres:a@b'>\
<p:tuple id='ID-a'><p:status><p:basic>open</p:basic></p:status><p:note xml:lang='en'>seq 7</p:note></p:tuple>\
<p:tuple id='ID-b'><p:status><p:basic>closed</p:basic></p:status><p:note>seq 9</p:note></p:tuple></p:presence>";
        assert_eq!(read(doc.as_bytes()).expect("reads").seq(), Some(9));
    }

    #[test]
    fn note_with_entities_is_unescaped() {
        let doc = build("pres:a@b", "t", true, "a & b <c>");
        assert_eq!(
            read(doc.as_bytes()).expect("reads").notes,
            vec!["a & b <c>"]
        );
    }

    #[test]
    fn seq_text_must_carry_the_prefix() {
        assert_eq!(seq_of(" seq 5 "), Some(5));
        assert_eq!(seq_of("5"), None);
        assert_eq!(seq_of("seq x"), None);
    }

    #[test]
    fn malformed_body_is_an_error_not_a_panic() {
        assert!(read(b"<presence><tuple></presence>").is_err());
    }
}
