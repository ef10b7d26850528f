"""``facewire certs``: a lab CA, the broker's certificate, client certificates (issue 12,
item 2). A real TLS handshake with them is tests/test_broker_auth.py's part."""

from __future__ import annotations

import ipaddress
import ssl
import stat

from cryptography import x509

from facewire import certs_cli
from tests.secrets_rig import run_cli


def certs(d, *argv):
    return run_cli(certs_cli.main, "--dir", str(d), *argv)


def test_init_makes_a_ca_server_and_client_certificates(tmp_path):
    status, out, err = certs(
        tmp_path, "init", "--host", "broker.lan", "--host", "10.0.0.5", "--client", "door"
    )
    assert status == 0, err
    tls = tmp_path / "tls"
    for key in ("ca.key", "server.key", "clients/door.key"):
        assert stat.S_IMODE((tls / key).stat().st_mode) == 0o600, key
    server = x509.load_pem_x509_certificate((tls / "server.crt").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "broker.lan"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.0.0.5"),
    }
    ca = x509.load_pem_x509_certificate((tls / "ca.crt").read_bytes())
    server.verify_directly_issued_by(ca)
    client = x509.load_pem_x509_certificate((tls / "clients" / "door.crt").read_bytes())
    client.verify_directly_issued_by(ca)
    # Python's TLS stack takes them as they are
    ctx = ssl.create_default_context(cafile=str(tls / "ca.crt"))
    ctx.load_cert_chain(tls / "clients" / "door.crt", tls / "clients" / "door.key")
    assert "server.crt" in out and "broker.lan" in out


def test_an_existing_ca_is_kept_unless_forced(tmp_path):
    certs(tmp_path, "init")
    ca = (tmp_path / "tls" / "ca.crt").read_bytes()
    status, _, err = certs(tmp_path, "init")
    assert status == 2 and "--force" in err
    assert (tmp_path / "tls" / "ca.crt").read_bytes() == ca
    status, _, _ = certs(tmp_path, "client", "hall")
    assert status == 0 and (tmp_path / "tls" / "clients" / "hall.crt").exists()
    assert certs(tmp_path, "init", "--force")[0] == 0
    assert (tmp_path / "tls" / "ca.crt").read_bytes() != ca


def test_bad_input_is_a_clear_error(tmp_path):
    status, _, err = certs(tmp_path, "client", "door")
    assert status == 2 and "no CA here" in err
    status, _, err = certs(tmp_path, "init", "--host", "a b")
    assert status == 2 and "not a host name" in err
    status, _, err = certs(tmp_path, "init", "--days", "0")
    assert status == 2 and "--days" in err
    status, _, err = certs(tmp_path, "init", "--client", "../x")
    assert status == 2 and "client certificate name" in err
