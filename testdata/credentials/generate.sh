#!/usr/bin/env bash
# Regenerates the TEST-ONLY credential fixtures in this directory with the openssl CLI (3.x).
# Herald's code never runs openssl; this script only makes the files. Every run makes new random
# keys, so run it only when the fixtures must change, and commit all files it writes together.
#
#   cd testdata/credentials && ./generate.sh
set -euo pipefail
cd "$(dirname "$0")"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A minimal `openssl ca` setup: it is the only openssl 3.0 command that sets arbitrary
# notBefore/notAfter dates (for the expired and not-yet-valid certificates).
mkdir -p "$work/new"
: > "$work/index.txt"
echo 1000 > "$work/serial"
cat > "$work/ca.cnf" <<EOF
[ca]
default_ca = herald_test
[herald_test]
dir = $work
database = $work/index.txt
new_certs_dir = $work/new
serial = $work/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[anything]
commonName = optional
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
[leaf_dev]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
# Apple's "APNs development" marker extension (value NULL), as on sandbox-only certificates.
1.2.840.113635.100.6.3.1 = ASN1:NULL
[leaf_prod]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
# Apple's "APNs production" marker extension (value NULL), as on production-only certificates.
1.2.840.113635.100.6.3.2 = ASN1:NULL
[leaf_universal]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
1.2.840.113635.100.6.3.1 = ASN1:NULL
1.2.840.113635.100.6.3.2 = ASN1:NULL
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
EOF

# selfsign KEY SUBJECT START END EXT OUT
selfsign() {
  openssl req -new -key "$1" -subj "$2" -out "$work/req.csr" 2>/dev/null
  openssl ca -batch -config "$work/ca.cnf" -selfsign -keyfile "$1" -in "$work/req.csr" \
    -startdate "$3" -enddate "$4" -extensions "$5" -preserveDN -notext -out "$6" 2>/dev/null
}
# casign CA_CERT CA_KEY LEAF_KEY SUBJECT START END EXT OUT
casign() {
  openssl req -new -key "$3" -subj "$4" -out "$work/req.csr" 2>/dev/null
  openssl ca -batch -config "$work/ca.cnf" -cert "$1" -keyfile "$2" -in "$work/req.csr" \
    -startdate "$5" -enddate "$6" -extensions "$7" -preserveDN -notext -out "$8" 2>/dev/null
}
rsa_key() { openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:${2:-2048}" -out "$1" 2>/dev/null; }

SUBJECT="/UID=com.example.herald/CN=Apple Push Services: com.example.herald/OU=HERALDTEAM/O=Herald Test/C=US"
START=20250101000000Z
END=21250101000000Z

# 1. APNs-style certificate auth: RSA-2048, self-signed, valid 2025-01-01 .. 2125-01-01.
rsa_key apns-key.pem
openssl pkey -in apns-key.pem -traditional -out apns-key-pkcs1.pem
selfsign apns-key.pem "$SUBJECT" $START $END leaf apns-cert.pem

# 2. Expired: valid 2023-01-01 .. 2024-01-01.
rsa_key apns-expired-key.pem
selfsign apns-expired-key.pem "$SUBJECT" 20230101000000Z 20240101000000Z leaf apns-expired-cert.pem

# 3. Not yet valid: valid 2100-01-01 .. 2125-01-01 (same key as 1).
selfsign apns-key.pem "$SUBJECT" 21000101000000Z $END leaf apns-not-yet-valid-cert.pem

# 4. No UID in the subject (same key as 1).
selfsign apns-key.pem "/CN=Apple Push Services: no uid/O=Herald Test/C=US" $START $END leaf apns-cert-no-uid.pem

# 5. Apple environment markers (same key as 1): development only, production only, both.
selfsign apns-key.pem "$SUBJECT" $START $END leaf_dev apns-cert-development.pem
selfsign apns-key.pem "$SUBJECT" $START $END leaf_prod apns-cert-production.pem
selfsign apns-key.pem "$SUBJECT" $START $END leaf_universal apns-cert-universal.pem

# 6. A chain: a test CA and a leaf it signed; apns-chain.pem is leaf then CA.
rsa_key test-ca-key.pem
selfsign test-ca-key.pem "/CN=Herald Test CA/O=Herald Test/C=US" $START $END ca_ext test-ca-cert.pem
rsa_key apns-chain-leaf-key.pem
casign test-ca-cert.pem test-ca-key.pem apns-chain-leaf-key.pem "$SUBJECT" $START $END leaf "$work/leaf.pem"
cat "$work/leaf.pem" test-ca-cert.pem > apns-chain.pem
rm test-ca-key.pem

# 7. An unrelated RSA-2048 key (mismatch tests) and a too-small RSA-1024 key.
rsa_key other-rsa-key.pem
rsa_key rsa-1024-key.pem 1024

# 8. EC certificate auth: P-256 certificate + its key in SEC1 form, with and without the public key.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/ec.pem" 2>/dev/null
openssl ec -in "$work/ec.pem" -out apns-ec-key-sec1.pem 2>/dev/null
openssl ec -in "$work/ec.pem" -no_public -out apns-ec-key-sec1-no-public.pem 2>/dev/null
selfsign "$work/ec.pem" "$SUBJECT" $START $END leaf apns-ec-cert.pem

# 9. Ed25519 certificate + PKCS#8 key.
openssl genpkey -algorithm ED25519 -out ed25519-key.pem 2>/dev/null
selfsign ed25519-key.pem "$SUBJECT" $START $END leaf ed25519-cert.pem

# 10. APNs token auth: a P-256 .p8 (PKCS#8, "BEGIN PRIVATE KEY", public key embedded, as Apple's),
#     its public key (for JWT verification in sandbox tests), the same key without the embedded
#     public key, and a P-384 key.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out apns-auth-key.p8 2>/dev/null
openssl pkey -in apns-auth-key.p8 -pubout -out apns-auth-key-public.pem
openssl ec -in apns-auth-key.p8 -no_public 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out apns-auth-key-no-public.p8
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out p384-key.pem 2>/dev/null

# 11. An encrypted PKCS#8 key (passphrase "herald"): Herald rejects encrypted keys.
openssl pkcs8 -topk8 -v2 aes-256-cbc -passout pass:herald -in apns-key.pem -out encrypted-key.pem

# 11b. The APNs certificate and key as a PKCS#12 bundle (passphrase "herald"), as Keychain exports
#      them: Herald refuses it with a hint to convert it to PEM.
openssl pkcs12 -export -in apns-cert.pem -inkey apns-key.pem -passout pass:herald -out apns.p12

# 12. A Google-style FCM service account with a fresh RSA-2048 PKCS#8 key, and its public key.
rsa_key "$work/sa.pem"
openssl pkey -in "$work/sa.pem" -pubout -out fcm-service-account-public.pem
python3 - "$work/sa.pem" > fcm-service-account.json <<'PY'
import json, sys
key = open(sys.argv[1]).read()
print(json.dumps({
    "type": "service_account",
    "project_id": "herald-test",
    "private_key_id": "0123456789abcdef0123456789abcdef01234567",
    "private_key": key,
    "client_email": "herald-test@herald-test.iam.gserviceaccount.com",
    "client_id": "100000000000000000001",
    "auth_uri": "https://accounts.google.com/o/oauth2/auth",
    "token_uri": "https://oauth2.googleapis.com/token",
    "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
    "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/herald-test%40herald-test.iam.gserviceaccount.com",
    "universe_domain": "googleapis.com",
}, indent=2))
PY

# 13. Ready-made Push API `content` objects (base64 where the API says base64).
b64() { base64 -w0 "$1"; }
cat > apn-cert-content.json <<EOF
{
  "certificate": "$(b64 apns-cert.pem)",
  "privateKey": "$(b64 apns-key.pem)"
}
EOF
cat > apn-cert-content-bundle-id.json <<EOF
{
  "certificate": "$(b64 apns-cert.pem)",
  "privateKey": "$(b64 apns-key-pkcs1.pem)",
  "bundleId": "com.example.herald.voip"
}
EOF
cat > apn-token-content.json <<EOF
{
  "keyId": "ABCDE12345",
  "teamId": "HERALDTEAM",
  "bundleId": "com.example.herald",
  "privateKey": "$(b64 apns-auth-key.p8)"
}
EOF
cat > fcm-content.json <<EOF
{
  "privateKey": "$(b64 fcm-service-account.json)"
}
EOF

echo "fixtures written to $(pwd)"
