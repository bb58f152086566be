"""etcd's TLS material for the simulated multi-host stack: a CA, the members' certificate, the clients'.

With ``SHIPLINE_ETCD_TLS`` on and no real certificates named, ``up`` generates them once under
``SHIPLINE_HOME/etcd-tls`` (keys mode 0600, the directory 0700): a CA, one certificate the members serve
clients and peers with (names ``localhost`` and the stack's loopback address; server and client use, since a
member dials its peers), and one certificate Shipline's clients present (client use only). The clients'
certificate has no common name, only an organisation: with ``--client-cert-auth`` etcd takes a common name
as the user of a request that carries no token, and its HTTP gateway refuses a certificate that has one
(400, "CommonName of client sending a request against gateway will be ignored"). Shipline's clients
authenticate with their password as before; the members' common name is no etcd user.

The ``cryptography`` package makes them where it is installed, else the ``openssl`` program; real
certificates (``SHIPLINE_ETCD_CA_FILE``/``CERT_FILE``/``KEY_FILE``) are never touched.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import tempfile
from pathlib import Path

from shipline.config import EtcdTlsFiles, Settings
from shipline.errors import ComponentStartError, ConfigError
from shipline.files import write_atomically
from shipline.programs import find_program

VALID_DAYS = 3650
CA_NAME = "Shipline etcd CA"
MEMBER_NAME = "shipline-etcd-member"
CLIENT_ORGANIZATION = "Shipline etcd clients"


def ensure_etcd_tls(settings: Settings, *, use_openssl: bool | None = None) -> EtcdTlsFiles | None:
    """The TLS files of the stack's etcd, generated first where the stack makes them and they are missing.

    Args:
        settings: The stack.
        use_openssl: Force the ``openssl`` program (True) or ``cryptography`` (False); default: the
            package where it is installed.

    Returns:
        The members' files; None when etcd speaks plain gRPC.

    Raises:
        ConfigError: real certificates are named but one of them does not exist.
        ComponentStartError: neither ``cryptography`` nor ``openssl`` can make them.
    """
    member, client = settings.etcd_member_tls_files, settings.etcd_tls_files
    if member is None or client is None:
        return None
    if not settings.etcd_generates_tls:
        for path in (member.ca, member.cert, member.key):
            if not path.is_file():
                raise ConfigError(
                    f"etcd's TLS file {path} does not exist",
                    hint="fix SHIPLINE_ETCD_CA_FILE, SHIPLINE_ETCD_CERT_FILE or SHIPLINE_ETCD_KEY_FILE, or "
                    "unset all three for certificates the stack generates",
                )
        return member
    wanted = (member.ca, member.cert, member.key, client.cert, client.key)
    if all(path.is_file() for path in wanted):
        return member
    directory = settings.etcd_tls_dir
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    if use_openssl is None:
        use_openssl = not _has_cryptography()
    make = _with_openssl if use_openssl else _with_cryptography
    make(directory, settings.host)
    return member


def _has_cryptography() -> bool:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return False
    return True


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    write_atomically(path, data.decode(), mode=0o600 if secret else 0o644)


def _with_cryptography(directory: Path, host: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        if common == CLIENT_ORGANIZATION:
            return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, common)])
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name(CA_NAME))
        .issuer_name(name(CA_NAME))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def issue(common: str, usages: list[x509.ObjectIdentifier], names: bool) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if names:
            alternatives: list[x509.GeneralName] = [
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address(host)),
            ]
            builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        certificate = builder.sign(ca_key, hashes.SHA256())
        return certificate.public_bytes(serialization.Encoding.PEM), pem_key(key)

    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    member_cert, member_key = issue(MEMBER_NAME, both, names=True)
    client_cert, client_key = issue(CLIENT_ORGANIZATION, [ExtendedKeyUsageOID.CLIENT_AUTH], names=False)
    # Keys first and the CA last: a half-made directory (the process killed) lacks a file and is made again.
    _write(directory / "member.key", member_key, secret=True)
    _write(directory / "client.key", client_key, secret=True)
    _write(directory / "member.crt", member_cert)
    _write(directory / "client.crt", client_cert)
    _write(directory / "ca.crt", ca.public_bytes(serialization.Encoding.PEM))


def _with_openssl(directory: Path, host: str) -> None:
    openssl = find_program("openssl")
    if openssl is None:
        raise ComponentStartError(
            "etcd: TLS is on and neither the cryptography package nor the openssl program is installed to "
            "make its certificates",
            hint="install openssl (or cryptography into the virtualenv), or name real certificates with "
            "SHIPLINE_ETCD_CA_FILE, SHIPLINE_ETCD_CERT_FILE and SHIPLINE_ETCD_KEY_FILE",
        )
    with tempfile.TemporaryDirectory(prefix=".etcd-tls-", dir=directory) as scratch:
        work = Path(scratch)

        def run(*arguments: str) -> None:
            done = subprocess.run([openssl, *arguments], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise ComponentStartError(
                    f"etcd: openssl {arguments[0]} failed making etcd's certificates: {done.stderr.strip()}",
                    hint="install the cryptography package into the virtualenv, or name real certificates",
                )

        def key(stem: str) -> str:
            path = str(work / f"{stem}.key")
            run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path)
            return path

        days = str(VALID_DAYS)
        ca_key = key("ca")
        run("req", "-x509", "-new", "-key", ca_key, "-subj", f"/CN={CA_NAME}", "-days", days, "-sha256",
            "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            "-out", str(work / "ca.crt"))  # fmt: skip
        extensions = {
            "member": "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n"
            f"subjectAltName=DNS:localhost,IP:{host}\n",
            "client": "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n",
        }
        for stem, subject in (("member", f"/CN={MEMBER_NAME}"), ("client", f"/O={CLIENT_ORGANIZATION}")):
            private = key(stem)
            request = str(work / f"{stem}.csr")
            (work / f"{stem}.ext").write_text(extensions[stem])
            run("req", "-new", "-key", private, "-subj", subject, "-out", request)
            run("x509", "-req", "-in", request, "-CA", str(work / "ca.crt"), "-CAkey", ca_key,
                "-CAcreateserial", "-days", days, "-sha256", "-extfile", str(work / f"{stem}.ext"),
                "-out", str(work / f"{stem}.crt"))  # fmt: skip
        for stem in ("member.key", "client.key", "member.crt", "client.crt", "ca.crt"):
            source = work / stem
            if stem.endswith(".key"):
                os.chmod(source, 0o600)
            _write(directory / stem, source.read_bytes(), secret=stem.endswith(".key"))
