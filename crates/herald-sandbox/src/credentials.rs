//! Credential files: generation (`write_credentials`), loading, and the rewrite of the
//! address-dependent files when the sandbox is bound to another address than they name.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

/// The bundle ID (APNs topic) of the sandbox's fake app.
pub const BUNDLE_ID: &str = "com.example.herald";
/// The Firebase project of the generated service account.
pub const PROJECT_ID: &str = "herald-sandbox";
/// OID of the X.500 `UID` attribute (userId), where Apple puts the bundle ID of a push certificate.
pub(crate) const UID_OID: [u64; 7] = [0, 9, 2342, 19200300, 100, 1, 1];

pub(crate) const CA_CERT: &str = "ca.pem";
pub(crate) const CA_KEY: &str = "ca-key.pem";
pub(crate) const APNS_TOKEN: &str = "apns-token.json";
pub(crate) const APNS_CERT: &str = "apns-cert.pem";
pub(crate) const APNS_KEY: &str = "apns-key.pem";
pub(crate) const FCM_SERVICE_ACCOUNT: &str = "fcm-service-account.json";
pub(crate) const FCM_LEGACY_KEY: &str = "fcm-legacy-key.txt";
pub(crate) const HERALD_ENV: &str = "herald.env";

/// Every file `write_credentials` writes, in the order it writes them.
pub const CREDENTIAL_FILES: [&str; 8] = [
    CA_CERT,
    CA_KEY,
    APNS_TOKEN,
    APNS_CERT,
    APNS_KEY,
    FCM_SERVICE_ACCOUNT,
    FCM_LEGACY_KEY,
    HERALD_ENV,
];

const SECRET: u32 = 0o600;
const PUBLIC: u32 = 0o644;

/// The address clients should dial: an unspecified bind address (`0.0.0.0`, `::`) becomes loopback.
pub(crate) fn dial_addr(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

pub(crate) fn base_url(listen: SocketAddr) -> String {
    format!("https://{}", dial_addr(listen))
}

/// Writes the credential files into `dir` (created if needed), naming `listen` as the sandbox
/// address. Existing files are overwritten; private keys get mode 0600.
pub fn write_credentials(dir: &Path, listen: SocketAddr) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let base = base_url(listen);
    let now = OffsetDateTime::now_utc();

    // Test CA (P-256). Its key is kept so a later start can sign a fresh server certificate.
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = dn(&[
        (DnType::CommonName, "Herald Sandbox Test CA"),
        (DnType::OrganizationName, "Herald Sandbox"),
    ]);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - Duration::days(1);
    ca.not_after = now + Duration::days(365 * 20);
    ca.serial_number = Some(random_serial());
    let ca_cert = ca.self_signed(&ca_key)?;
    write_file(dir, CA_CERT, ca_cert.pem().as_bytes(), PUBLIC)?;
    write_file(dir, CA_KEY, ca_key.serialize_pem().as_bytes(), SECRET)?;
    let issuer = Issuer::new(ca, ca_key);

    // APNs token auth: a .p8 (PKCS#8 P-256) key with a key ID and a team ID.
    let rng = ring::rand::SystemRandom::new();
    let p8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| anyhow!("generating the APNs P-256 key"))?;
    let p8_pem = pem_encode("PRIVATE KEY", p8.as_ref());
    let key_id = apple_id();
    let team_id = apple_id();
    let token = json!({
        "keyId": key_id,
        "teamId": team_id,
        "bundleId": BUNDLE_ID,
        "privateKey": STANDARD.encode(p8_pem.as_bytes()),
    });
    write_file(dir, APNS_TOKEN, pretty(&token).as_bytes(), SECRET)?;

    // APNs certificate auth: an RSA 2048 client certificate whose subject UID is the bundle ID,
    // shaped like the "Apple Push Services" certificates Apple issues.
    let apns_key_pem = generate_rsa_pkcs8_pem()?;
    let apns_key = KeyPair::from_pkcs8_pem_and_sign_algo(&apns_key_pem, &rcgen::PKCS_RSA_SHA256)?;
    let mut apns = CertificateParams::default();
    let cn = format!("Apple Push Services: {BUNDLE_ID}");
    let mut apns_dn = DistinguishedName::new();
    apns_dn.push(DnType::CustomDnType(UID_OID.to_vec()), BUNDLE_ID);
    apns_dn.push(DnType::CommonName, cn.as_str());
    apns_dn.push(DnType::OrganizationalUnitName, team_id.as_str());
    apns_dn.push(DnType::OrganizationName, "Herald Sandbox");
    apns_dn.push(DnType::CountryName, "US");
    apns.distinguished_name = apns_dn;
    apns.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    apns.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    apns.use_authority_key_identifier_extension = true;
    apns.not_before = now - Duration::days(1);
    apns.not_after = now + Duration::days(365 * 10);
    apns.serial_number = Some(random_serial());
    let apns_cert = apns.signed_by(&apns_key, &issuer)?;
    write_file(dir, APNS_CERT, apns_cert.pem().as_bytes(), PUBLIC)?;
    write_file(dir, APNS_KEY, apns_key_pem.as_bytes(), SECRET)?;

    // FCM HTTP v1: a Google-style service account with an RSA 2048 key.
    let fcm_key_pem = generate_rsa_pkcs8_pem()?;
    let mut rnd = rand::rng();
    let private_key_id: String = (0..20)
        .map(|_| format!("{:02x}", rnd.random::<u8>()))
        .collect();
    let client_id: String = std::iter::once(char::from(b'1' + rnd.random_range(0..9u8)))
        .chain((0..20).map(|_| char::from(b'0' + rnd.random_range(0..10u8))))
        .collect();
    let client_email = format!("firebase-adminsdk-sandbox@{PROJECT_ID}.iam.gserviceaccount.com");
    let account = json!({
        "type": "service_account",
        "project_id": PROJECT_ID,
        "private_key_id": private_key_id,
        "private_key": fcm_key_pem,
        "client_email": client_email,
        "client_id": client_id,
        "auth_uri": format!("{base}/o/oauth2/auth"),
        "token_uri": format!("{base}/token"),
        "auth_provider_x509_cert_url": format!("{base}/oauth2/v1/certs"),
        "client_x509_cert_url": format!("{base}/robot/v1/metadata/x509/{}", client_email.replace('@', "%40")),
        "universe_domain": "googleapis.com",
    });
    write_file(
        dir,
        FCM_SERVICE_ACCOUNT,
        pretty(&account).as_bytes(),
        SECRET,
    )?;

    // Legacy FCM server key, shaped like the ones the Firebase console showed.
    let legacy_key = format!("AAAA{}:APA91b{}", random_b64url(7), random_b64url(134));
    write_file(
        dir,
        FCM_LEGACY_KEY,
        format!("{legacy_key}\n").as_bytes(),
        SECRET,
    )?;

    write_env(dir, listen)?;
    Ok(())
}

fn herald_env(dir: &Path, listen: SocketAddr) -> Result<String> {
    let base = base_url(listen);
    let ca = absolute(dir)?.join(CA_CERT);
    Ok(format!(
        "HERALD_APNS_URL={base}\nHERALD_APNS_SANDBOX_URL={base}\nHERALD_FCM_URL={base}\n\
         HERALD_FCM_LEGACY_URL={base}\nHERALD_EXTRA_CA_FILE={}\n",
        ca.display()
    ))
}

fn write_env(dir: &Path, listen: SocketAddr) -> Result<()> {
    write_file(dir, HERALD_ENV, herald_env(dir, listen)?.as_bytes(), PUBLIC)
}

fn absolute(dir: &Path) -> Result<PathBuf> {
    dir.canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))
}

/// Everything the server needs from the credentials directory, parsed once at start.
pub(crate) struct Loaded {
    pub dir: PathBuf,
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub apns_key_id: String,
    pub apns_team_id: String,
    pub bundle_id: String,
    /// Uncompressed P-256 point of the .p8 key.
    pub apns_public_key: Vec<u8>,
    pub fcm_project_id: String,
    pub fcm_client_email: String,
    pub fcm_private_key_id: String,
    /// DER RSAPublicKey of the service account key.
    pub fcm_public_key: Vec<u8>,
    pub fcm_token_uri: String,
    pub legacy_key: String,
}

/// Makes `dir` ready for a sandbox bound to `bound`: generates the credentials when the directory
/// is missing or empty, rewrites the address-dependent files when they name another address, and
/// loads everything.
pub(crate) fn prepare(dir: &Path, bound: SocketAddr) -> Result<Loaded> {
    let empty = match fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    if empty {
        tracing::info!(dir = %dir.display(), "generating sandbox credentials");
        write_credentials(dir, bound)?;
    } else {
        let missing: Vec<&str> = CREDENTIAL_FILES
            .iter()
            .copied()
            .filter(|f| !dir.join(f).is_file())
            .collect();
        if !missing.is_empty() {
            bail!(
                "credentials directory {} is not empty but lacks {}; point --credentials at an \
                 empty directory to generate a fresh set",
                dir.display(),
                missing.join(", ")
            );
        }
        rewrite_address(dir, bound)?;
    }
    load(dir)
}

fn rewrite_address(dir: &Path, bound: SocketAddr) -> Result<()> {
    let wanted_env = herald_env(dir, bound)?;
    let current_env = fs::read_to_string(dir.join(HERALD_ENV))?;
    if current_env != wanted_env {
        tracing::info!(addr = %dial_addr(bound), "rewriting herald.env for the bound address");
        write_env(dir, bound)?;
    }
    let path = dir.join(FCM_SERVICE_ACCOUNT);
    let mut account: Value = serde_json::from_slice(&fs::read(&path)?)
        .with_context(|| format!("parsing {}", path.display()))?;
    let base = base_url(bound);
    let token_uri = format!("{base}/token");
    if account.get("token_uri").and_then(Value::as_str) != Some(token_uri.as_str()) {
        let obj = account
            .as_object_mut()
            .ok_or_else(|| anyhow!("{} is not a JSON object", path.display()))?;
        obj.insert("token_uri".into(), Value::String(token_uri));
        obj.insert(
            "auth_uri".into(),
            Value::String(format!("{base}/o/oauth2/auth")),
        );
        write_file(
            dir,
            FCM_SERVICE_ACCOUNT,
            pretty(&account).as_bytes(),
            SECRET,
        )?;
    }
    Ok(())
}

fn load(dir: &Path) -> Result<Loaded> {
    let read = |name: &str| -> Result<String> {
        fs::read_to_string(dir.join(name)).with_context(|| format!("reading {name}"))
    };
    let field = |v: &Value, file: &str, name: &str| -> Result<String> {
        v.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("{file}: missing string field {name:?}"))
    };

    let ca_cert_pem = read(CA_CERT)?;
    let ca_key_pem = read(CA_KEY)?;

    let token: Value =
        serde_json::from_str(&read(APNS_TOKEN)?).context("parsing apns-token.json")?;
    let p8_pem = STANDARD
        .decode(field(&token, APNS_TOKEN, "privateKey")?)
        .context("apns-token.json: privateKey is not base64")?;
    let p8 = pem_decode(std::str::from_utf8(&p8_pem)?, "PRIVATE KEY")
        .context("apns-token.json: privateKey is not a PEM private key")?;
    let apns_key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &p8,
        &ring::rand::SystemRandom::new(),
    )
    .map_err(|e| anyhow!("apns-token.json: privateKey is not a PKCS#8 P-256 key: {e}"))?;

    let account: Value = serde_json::from_str(&read(FCM_SERVICE_ACCOUNT)?)
        .context("parsing fcm-service-account.json")?;
    let rsa_der = pem_decode(
        &field(&account, FCM_SERVICE_ACCOUNT, "private_key")?,
        "PRIVATE KEY",
    )
    .context("fcm-service-account.json: private_key is not a PEM private key")?;
    let rsa = RsaKeyPair::from_pkcs8(&rsa_der)
        .map_err(|e| anyhow!("fcm-service-account.json: private_key is not PKCS#8 RSA: {e}"))?;

    let legacy_key = read(FCM_LEGACY_KEY)?.trim().to_owned();
    if legacy_key.is_empty() {
        bail!("{FCM_LEGACY_KEY} is empty");
    }

    Ok(Loaded {
        dir: dir.to_path_buf(),
        ca_cert_pem,
        ca_key_pem,
        apns_key_id: field(&token, APNS_TOKEN, "keyId")?,
        apns_team_id: field(&token, APNS_TOKEN, "teamId")?,
        bundle_id: field(&token, APNS_TOKEN, "bundleId")?,
        apns_public_key: apns_key.public_key().as_ref().to_vec(),
        fcm_project_id: field(&account, FCM_SERVICE_ACCOUNT, "project_id")?,
        fcm_client_email: field(&account, FCM_SERVICE_ACCOUNT, "client_email")?,
        fcm_private_key_id: field(&account, FCM_SERVICE_ACCOUNT, "private_key_id")?,
        fcm_public_key: rsa.public().as_ref().to_vec(),
        fcm_token_uri: field(&account, FCM_SERVICE_ACCOUNT, "token_uri")?,
        legacy_key,
    })
}

/// A fresh TLS server certificate for 127.0.0.1 / ::1 / localhost signed by the sandbox CA.
/// Returns (certificate DER, PKCS#8 key DER).
pub(crate) fn server_certificate(loaded: &Loaded) -> Result<(Vec<u8>, Vec<u8>)> {
    let ca_key = KeyPair::from_pem(&loaded.ca_key_pem).context("parsing ca-key.pem")?;
    let issuer = Issuer::from_ca_cert_pem(&loaded.ca_cert_pem, ca_key).context("parsing ca.pem")?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(&[
        (DnType::CommonName, "localhost"),
        (DnType::OrganizationName, "Herald Sandbox"),
    ]);
    params.subject_alt_names = vec![
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        SanType::DnsName("localhost".try_into()?),
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(397);
    params.serial_number = Some(random_serial());
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.der().to_vec(), key.serialize_der()))
}

fn dn(entries: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (ty, value) in entries {
        dn.push(ty.clone(), *value);
    }
    dn
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::rng().random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Ten characters of A–Z / 0–9, the shape of Apple key IDs and team IDs.
fn apple_id() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..10)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

pub(crate) fn random_b64url(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::rng().fill(bytes.as_mut_slice());
    let mut s = URL_SAFE_NO_PAD.encode(&bytes);
    s.truncate(len);
    s
}

fn generate_rsa_pkcs8_pem() -> Result<String> {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
        .context("generating an RSA 2048 key")?;
    Ok(key
        .to_pkcs8_pem(LineEnding::LF)
        .context("encoding the RSA key")?
        .to_string())
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("JSON values serialize");
    s.push('\n');
    s
}

pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER contents of the first PEM block labelled `label`.
pub(crate) fn pem_decode(pem: &str, label: &str) -> Result<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin).ok_or_else(|| anyhow!("no {begin} line"))? + begin.len();
    let stop = pem[start..]
        .find(&end)
        .ok_or_else(|| anyhow!("no {end} line"))?
        + start;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(b64).context("PEM body is not base64")
}

fn write_file(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<()> {
    let path = dir.join(name);
    // Write to a temporary file then rename, so a reader never sees half a file, and so the mode
    // is right from the first byte (an existing file's mode is not carried over).
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
