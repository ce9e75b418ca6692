"""
Certificates made at test time: a certificate authority and the server
certificates it issues, for TLS tests against a real server on loopback.
Nothing here is kept on disk beyond the files a test asks for.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Sequence

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Issued", "TestCA"]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@attrs.frozen
class Issued:
    """
    A server certificate and its private key.

    :ivar cert_pem: the certificate (PEM)
    :ivar key_pem: its private key (PEM, unencrypted)
    """

    cert_pem: bytes
    key_pem: bytes = attrs.field(repr=False)

    @property
    def pem(self) -> bytes:
        """
        Certificate and key in one PEM, as ``PrivateCertificate.loadPEM`` and
        the ``ssl:`` endpoint's ``certKey`` take them.
        """
        return self.cert_pem + self.key_pem


class TestCA:
    """
    A certificate authority made for one test run.

    :param name: its common name
    """

    __test__ = False  # not a test case, whatever pytest thinks of the name

    def __init__(self, name: str = "ivrproto test CA") -> None:
        self._key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
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
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        """
        The CA's own certificate (PEM): what a client must trust.
        """
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def write(self, path: Path) -> Path:
        """
        Write the CA certificate to ``path`` (a trust bundle of one).
        """
        path.write_bytes(self.cert_pem)
        return path

    def issue(
        self,
        names: Sequence[str] = ("localhost",),
        *,
        not_before: datetime.timedelta = datetime.timedelta(days=-1),
        not_after: datetime.timedelta = datetime.timedelta(days=7),
    ) -> Issued:
        """
        A server certificate for ``names`` (DNS names or IP addresses, all in
        the subject alternative name), valid from ``now + not_before`` to
        ``now + not_after``: a negative ``not_after`` makes an expired one.
        """
        key = _key()
        now = _now()
        alternatives: list[x509.GeneralName] = []
        for name in names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternatives.append(x509.DNSName(name))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + not_before)
            .not_valid_after(now + not_after)
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))
