//! A minimal DER walk over X.509 certificates: just enough to find the
//! subject, the public key and the DNS names of the subject alternative name
//! extension. The certificates it reads have already been verified by webpki
//! (peers) or were written by [`crate::creds`] (our own); it never panics on
//! malformed input, it returns `None`.

/// One DER element: its tag, its content, the whole element (header
/// included) and what follows it.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
    rest: &'a [u8],
}

fn tlv(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, after_tag) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        // Multi-byte tags do not occur in certificates.
        return None;
    }
    let (&first, after_len) = after_tag.split_first()?;
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || after_len.len() < n {
            return None;
        }
        let len = after_len[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    if input.len() < end {
        return None;
    }
    Some(Tlv {
        tag,
        content: &input[header..end],
        whole: &input[..end],
        rest: &input[end..],
    })
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// `[0] EXPLICIT Version`
const VERSION: u8 = 0xa0;
/// `[3] EXPLICIT Extensions`
const EXTENSIONS: u8 = 0xa3;
/// `dNSName [2] IMPLICIT IA5String` inside a GeneralName.
const DNS_NAME: u8 = 0x82;
/// id-ce-subjectAltName, 2.5.29.17.
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// The parts of a certificate roam looks at.
#[derive(Debug, Default)]
pub(crate) struct CertInfo<'a> {
    /// The subject name, whole DER element.
    pub subject: &'a [u8],
    /// The SubjectPublicKeyInfo, whole DER element.
    pub spki: &'a [u8],
    /// The dNSName entries of the subject alternative name, in order.
    pub dns_names: Vec<&'a str>,
}

/// Walks a DER certificate.
pub(crate) fn parse_cert(der: &[u8]) -> Option<CertInfo<'_>> {
    let cert = tlv(der)?;
    if cert.tag != SEQUENCE {
        return None;
    }
    let tbs = tlv(cert.content)?;
    if tbs.tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs.content;
    let mut next = |want: Option<u8>| -> Option<Tlv<'_>> {
        let t = tlv(rest)?;
        if want.is_some_and(|w| w != t.tag) {
            return None;
        }
        rest = t.rest;
        Some(t)
    };
    let mut field = next(None)?;
    if field.tag == VERSION {
        field = next(None)?;
    }
    // `field` is the serial number; then signature, issuer, validity.
    let _serial = field;
    next(Some(SEQUENCE))?;
    next(Some(SEQUENCE))?;
    next(Some(SEQUENCE))?;
    let subject = next(Some(SEQUENCE))?.whole;
    let spki = next(Some(SEQUENCE))?.whole;
    let mut info = CertInfo {
        subject,
        spki,
        dns_names: Vec::new(),
    };
    // Optional issuerUniqueID [1], subjectUniqueID [2], extensions [3].
    while let Some(t) = next(None) {
        if t.tag == EXTENSIONS {
            info.dns_names = san_dns_names(t.content)?;
        }
    }
    Some(info)
}

/// The dNSNames of the SAN extension in `[3] { SEQUENCE OF Extension }`.
fn san_dns_names(exts: &[u8]) -> Option<Vec<&str>> {
    let seq = tlv(exts)?;
    if seq.tag != SEQUENCE {
        return None;
    }
    let mut rest = seq.content;
    while !rest.is_empty() {
        let ext = tlv(rest)?;
        rest = ext.rest;
        if ext.tag != SEQUENCE {
            return None;
        }
        let oid = tlv(ext.content)?;
        if oid.tag != OID || oid.content != OID_SAN {
            continue;
        }
        let mut value = tlv(oid.rest)?;
        if value.tag == BOOLEAN {
            value = tlv(value.rest)?;
        }
        if value.tag != OCTET_STRING {
            return None;
        }
        let names = tlv(value.content)?;
        if names.tag != SEQUENCE {
            return None;
        }
        let mut out = Vec::new();
        let mut gn = names.content;
        while !gn.is_empty() {
            let n = tlv(gn)?;
            gn = n.rest;
            if n.tag == DNS_NAME {
                out.push(std::str::from_utf8(n.content).ok()?);
            }
        }
        return Some(out);
    }
    Some(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rcgen_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["node-1".to_string(), "other".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let info = parse_cert(cert.der()).unwrap();
        assert_eq!(info.dns_names, vec!["node-1", "other"]);
        assert_eq!(info.spki, key.public_key_der().as_slice());
    }

    #[test]
    fn garbage_is_none_not_panic() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["n".to_string()]).unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        for cut in 0..der.len() {
            let _ = parse_cert(&der[..cut]);
        }
        let mut x: u32 = 12345;
        for i in 0..der.len() {
            let mut d = der.clone();
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            d[i] ^= (x >> 16) as u8 | 1;
            let _ = parse_cert(&d);
        }
        assert!(parse_cert(b"").is_none());
        assert!(parse_cert(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
    }
}
