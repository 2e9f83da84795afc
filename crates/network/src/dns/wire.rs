//! The DNS messages the embedded server reads and writes (RFC 1035, section 4): one
//! question parsed, answers with A records built, the truncation bit, and TCP's two-byte
//! length prefix (section 4.2.2).

use std::io::{Read, Write};
use std::net::Ipv4Addr;

use super::{CLASS_IN, TTL, TYPE_A};

/// A parsed query: the ID, flags, the (lower-cased, dot-less) name and type of its one
/// question, and where the question ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub flags: u16,
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    question_end: usize,
}

/// Parses a query with exactly one question; `None` for anything else (ignored).
pub fn parse_query(packet: &[u8]) -> Option<Query> {
    if packet.len() < 12 {
        return None;
    }
    let word = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    let flags = word(2);
    // A response, or not a standard query: not ours to answer.
    if flags & 0x8000 != 0 || (flags >> 11) & 0xf != 0 || word(4) != 1 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *packet.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        // Compression pointers have no place in a question.
        if len > 63 {
            return None;
        }
        let label = packet.get(at..at + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]);
    let qclass = u16::from_be_bytes([*packet.get(at + 2)?, *packet.get(at + 3)?]);
    Some(Query {
        id: word(0),
        flags,
        name: labels.join("."),
        qtype,
        qclass,
        question_end: at + 4,
    })
}

/// The answer to `query` (as it came in `packet`) with `addresses` as A records (none: an
/// empty NOERROR answer, as for a local name asked for another type) or `rcode`.
pub fn answer(packet: &[u8], query: &Query, addresses: &[Ipv4Addr], rcode: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(query.question_end + 16 * addresses.len());
    out.extend_from_slice(&query.id.to_be_bytes());
    // QR, the opcode and RD as asked, AA, RA, the rcode.
    let flags = 0x8000 | (query.flags & 0x7900) | 0x0400 | 0x0080 | u16::from(rcode & 0xf);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&packet[12..query.question_end]);
    for ip in addresses {
        // The name: a pointer to the question's, at offset 12.
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out
}

/// Whether a response has the TC bit: it was cut to fit a UDP datagram.
pub fn truncated(packet: &[u8]) -> bool {
    packet.len() >= 4 && packet[2] & 0x02 != 0
}

/// The largest UDP answer `query` (as it came in `packet`) takes: its EDNS0 OPT record's
/// payload size (RFC 6891), else 512.
pub fn udp_limit(packet: &[u8], query: &Query) -> usize {
    let counts = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    // Only the simple case: no answer or authority records, the OPT record first among the
    // additional ones (what stub resolvers send).
    if packet.len() < 12 || counts(6) != 0 || counts(8) != 0 || counts(10) == 0 {
        return 512;
    }
    let at = query.question_end;
    match packet.get(at..at + 5) {
        Some([0, 0, 41, hi, lo]) => usize::from(u16::from_be_bytes([*hi, *lo])).max(512),
        _ => 512,
    }
}

/// Reads one length-prefixed message from a TCP stream; `None` at its end.
pub fn read_framed(stream: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut message)?;
    Ok(Some(message))
}

/// Writes one message with its length prefix (in one write, so it leaves in one segment).
pub fn write_framed(stream: &mut impl Write, message: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(message.len()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "DNS message over 65535 bytes",
        )
    })?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A query for `name` of `qtype`, ID 0x1234, recursion desired.
    pub(crate) fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&CLASS_IN.to_be_bytes());
        p
    }

    #[test]
    fn parses_one_question_and_ignores_the_rest() {
        let q = parse_query(&query("Web.Example", TYPE_A)).unwrap();
        assert_eq!(
            (q.id, q.name.as_str(), q.qtype),
            (0x1234, "web.example", TYPE_A)
        );
        let mut response = query("web", TYPE_A);
        response[2] |= 0x80;
        assert!(parse_query(&response).is_none());
        assert!(parse_query(&query("web", TYPE_A)[..14]).is_none());
        assert!(parse_query(&[0; 5]).is_none());
        let mut pointer = query("web", TYPE_A);
        pointer[12] = 0xc0;
        assert!(parse_query(&pointer).is_none());
    }

    #[test]
    fn answers_carry_the_question_and_a_records() {
        let packet = query("db", TYPE_A);
        let q = parse_query(&packet).unwrap();
        let ips = [Ipv4Addr::new(10, 1, 0, 5), Ipv4Addr::new(10, 2, 0, 7)];
        let a = answer(&packet, &q, &ips, 0);
        assert_eq!(&a[..2], &[0x12, 0x34]);
        // QR, RD kept, AA, RA, NOERROR.
        assert_eq!(u16::from_be_bytes([a[2], a[3]]), 0x8580);
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 2);
        assert_eq!(&a[12..packet.len()], &packet[12..]);
        assert_eq!(&a[a.len() - 4..], &[10, 2, 0, 7]);
        let fail = answer(&packet, &q, &[], 2);
        assert_eq!(fail[3] & 0xf, 2);
        assert_eq!(fail.len(), packet.len());
    }

    #[test]
    fn truncation_edns_size_and_framing() {
        let packet = query("db", TYPE_A);
        let q = parse_query(&packet).unwrap();
        assert_eq!(udp_limit(&packet, &q), 512);
        let mut edns = packet.clone();
        edns[11] = 1;
        edns.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(udp_limit(&edns, &parse_query(&edns).unwrap()), 4096);
        let mut reply = answer(&packet, &q, &[], 0);
        assert!(!truncated(&reply));
        reply[2] |= 0x02;
        assert!(truncated(&reply));

        let mut wire = Vec::new();
        write_framed(&mut wire, &packet).unwrap();
        write_framed(&mut wire, &reply).unwrap();
        assert_eq!(&wire[..2], &(packet.len() as u16).to_be_bytes());
        let mut reader = &wire[..];
        assert_eq!(read_framed(&mut reader).unwrap().unwrap(), packet);
        assert_eq!(read_framed(&mut reader).unwrap().unwrap(), reply);
        assert!(read_framed(&mut reader).unwrap().is_none());
        // A message cut short is an error, not a message.
        assert!(read_framed(&mut &wire[..5]).is_err());
    }
}
