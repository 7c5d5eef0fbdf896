//! Cluster credentials: one certificate authority per cluster and one
//! certificate per daemon.
//!
//! Layout of a credentials directory (`/etc/roam` by default):
//!
//! | file        | mode | content                                        |
//! |-------------|------|------------------------------------------------|
//! | `ca.pem`    | 0644 | the cluster CA certificate (self-signed)       |
//! | `ca.key`    | 0600 | the CA's private key (ECDSA P-256, PKCS#8)     |
//! | `NAME.pem`  | 0644 | node `NAME`'s certificate, signed by the CA    |
//! | `NAME.key`  | 0600 | node `NAME`'s private key                      |
//!
//! A node certificate carries the node name as its only DNS subject
//! alternative name (and as its common name); the TLS layer takes a peer's
//! name from there. Node certificates are good for both TLS client and
//! server authentication, since every daemon is both.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use thiserror::Error;

use crate::der;

/// The common name of every cluster CA.
pub const CA_COMMON_NAME: &str = "roam cluster CA";
/// File name of the CA certificate in a credentials directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key in a credentials directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// How long a node certificate is valid, in years.
pub const NODE_CERT_YEARS: i32 = 10;
/// How long the cluster CA is valid, in years (longer than any node
/// certificate it issues).
pub const CA_CERT_YEARS: i32 = 30;

/// What a valid node name looks like, for error messages.
pub const NODE_NAME_RULE: &str = "a node name is 1 to 63 letters, digits, '_' or '-', \
     does not start or end with '-' and is not all digits";

/// Errors from creating or using cluster credentials.
#[derive(Debug, Error)]
pub enum CredsError {
    #[error("cannot create directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cluster credentials already exist in {} (refusing to overwrite)", dir.display())]
    AlreadyExists { dir: PathBuf },
    #[error("no cluster CA in {}: run `roam cluster init` first", dir.display())]
    NoCa { dir: PathBuf },
    #[error("invalid node name '{name}': {NODE_NAME_RULE}")]
    InvalidName { name: String },
    #[error("node name '{name}' is reserved: its files would overwrite the cluster CA's")]
    ReservedName { name: String },
    #[error("invalid cluster CA in {}: {reason}", path.display())]
    BadCa { path: PathBuf, reason: &'static str },
    #[error("cannot generate {what}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
}

/// Whether `name` can name a node: 1–63 ASCII letters, digits, `_` or `-`,
/// not starting or ending with `-`, not all digits.
///
/// The last two rules make every node name a valid DNS label for TLS name
/// checks (rustls refuses a server name that ends in `-` or is all digits).
pub fn valid_node_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !b.iter().all(u8::is_ascii_digit)
}

/// Creates a new cluster CA in `dir`: `ca.pem` and `ca.key` (mode 0600).
///
/// `dir` is created with mode 0700 if it does not exist (its parents with the
/// default mode). Refuses if `dir/ca.key` already exists.
pub fn init_cluster(dir: &Path) -> Result<(), CredsError> {
    let key_path = dir.join(CA_KEY_FILE);
    let cert_path = dir.join(CA_CERT_FILE);
    if key_path.exists() {
        return Err(CredsError::AlreadyExists {
            dir: dir.to_path_buf(),
        });
    }
    create_private_dir(dir)?;

    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| CredsError::Generate {
            what: "the cluster CA key",
            source,
        })?;
    let mut params = ca_params();
    set_validity(&mut params, CA_CERT_YEARS);
    let cert = params
        .self_signed(&key)
        .map_err(|source| CredsError::Generate {
            what: "the cluster CA certificate",
            source,
        })?;

    // The key is created exclusively: two concurrent `init`s cannot both win.
    write_new_file(&key_path, key.serialize_pem().as_bytes(), 0o600).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            CredsError::AlreadyExists {
                dir: dir.to_path_buf(),
            }
        } else {
            CredsError::Write {
                path: key_path.clone(),
                source,
            }
        }
    })?;
    if let Err(e) = replace_file(&cert_path, cert.pem().as_bytes(), 0o644) {
        let _ = fs::remove_file(&key_path);
        return Err(e);
    }
    Ok(())
}

/// Issues a certificate for node `name`, signed by the CA in `dir`.
///
/// Writes `dir/NAME.pem` (the certificate alone) and `dir/NAME.key` (mode
/// 0600), replacing earlier ones (re-issue), and returns their paths. The
/// certificate is valid for [`NODE_CERT_YEARS`] years from yesterday.
pub fn issue_node(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), CredsError> {
    if !valid_node_name(name) {
        return Err(CredsError::InvalidName {
            name: name.to_string(),
        });
    }
    if name == "ca" {
        return Err(CredsError::ReservedName {
            name: name.to_string(),
        });
    }
    let ca_key_path = dir.join(CA_KEY_FILE);
    let ca_cert_path = dir.join(CA_CERT_FILE);
    if !ca_key_path.exists() || !ca_cert_path.exists() {
        return Err(CredsError::NoCa {
            dir: dir.to_path_buf(),
        });
    }
    let ca_key_pem = read_string(&ca_key_path)?;
    let ca_cert_pem = read_string(&ca_cert_path)?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|_| CredsError::BadCa {
        path: ca_key_path.clone(),
        reason: "not a PEM private key",
    })?;
    let ca_der = first_pem_cert(&ca_cert_pem).ok_or_else(|| CredsError::BadCa {
        path: ca_cert_path.clone(),
        reason: "no certificate in the file",
    })?;
    let ca_info = der::parse_cert(&ca_der).ok_or_else(|| CredsError::BadCa {
        path: ca_cert_path.clone(),
        reason: "unreadable certificate",
    })?;
    if ca_info.spki != ca_key.public_key_der().as_slice() {
        return Err(CredsError::BadCa {
            path: dir.to_path_buf(),
            reason: "ca.key is not the key of ca.pem",
        });
    }
    // rcgen signs with an issuer *certificate*; rebuild the CA's from the
    // same parameters and key. Only its subject name and key matter to the
    // issued certificate (issuer name, authority key identifier, signature),
    // and both are checked to equal those of ca.pem.
    let issuer = ca_params()
        .self_signed(&ca_key)
        .map_err(|source| CredsError::Generate {
            what: "the issuer certificate",
            source,
        })?;
    let issuer_subject = der::parse_cert(issuer.der())
        .map(|i| i.subject.to_vec())
        .unwrap_or_default();
    if issuer_subject != ca_info.subject {
        return Err(CredsError::BadCa {
            path: ca_cert_path,
            reason: "not a roam cluster CA (unexpected subject name)",
        });
    }

    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| CredsError::Generate {
            what: "the node key",
            source,
        })?;
    let mut params =
        CertificateParams::new(vec![name.to_string()]).map_err(|source| CredsError::Generate {
            what: "the node certificate",
            source,
        })?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, NODE_CERT_YEARS);
    let cert = params
        .signed_by(&key, &issuer, &ca_key)
        .map_err(|source| CredsError::Generate {
            what: "the node certificate",
            source,
        })?;

    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    replace_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    replace_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok((cert_path, key_path))
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Sets the validity from yesterday (some slack for clocks a little behind)
/// to the same day `years` later.
fn set_validity(params: &mut CertificateParams, years: i32) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let days = (now.as_secs() / 86_400) as i64 - 1;
    let (y, m, d) = civil_from_days(days);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    // 29 February plus n years is 28 February.
    params.not_after = rcgen::date_time_ymd(y + years, m, if m == 2 { d.min(28) } else { d });
}

/// The proleptic Gregorian (year, month, day) of a day number counted from
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (y as i32, m as u8, d as u8)
}

fn create_private_dir(dir: &Path) -> Result<(), CredsError> {
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() {
            fs::create_dir_all(parent).map_err(|source| CredsError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(source) => Err(CredsError::CreateDir {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

fn read_string(path: &Path) -> Result<String, CredsError> {
    fs::read_to_string(path).map_err(|source| CredsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn first_pem_cert(pem: &str) -> Option<Vec<u8>> {
    let mut rd = pem.as_bytes();
    let first = rustls_pemfile::certs(&mut rd).next()?.ok()?;
    Some(first.to_vec())
}

/// Creates `path` exclusively with `mode` and writes `bytes` to it.
fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Atomically replaces `path` by a file of `mode` holding `bytes` (written
/// to a temporary file in the same directory, then renamed).
fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CredsError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let err = |source| CredsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let _ = fs::remove_file(&tmp);
    write_new_file(&tmp, bytes, mode).map_err(err)?;
    // The umask may have narrowed the mode; a public certificate stays
    // readable, and a key never gets wider than asked.
    let res = fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(source) = res {
        let _ = fs::remove_file(&tmp);
        return Err(err(source));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }
}
