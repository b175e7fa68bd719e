"""Evidence packages: what they answer, and that any change to one is detected offline."""

import json

import pytest

from controlplane.identity import actor_for
from controlplane.models import AuditEvent
from evidence.collect import CONTROLS, Scope
from evidence.models import AuditCheckpoint
from evidence.services import evidence_prepare
from runs.models import Effect

from .conftest import evidence_json, package_bytes, read_member, verifier

pytestmark = pytest.mark.django_db


def test_a_runs_evidence_answers_the_six_questions(approved_and_compensated_run, requester, auditor):
    run = approved_and_compensated_run
    evidence = evidence_json(package_bytes(Scope(run_id=str(run.pk)), "json", auditor))

    assert evidence["controls"] == CONTROLS
    [entry] = evidence["runs"]
    assert entry["run"]["id"] == str(run.pk) and entry["run"]["status"] == "compensated"
    # 1. who requested it
    assert entry["requester"]["user"] == "requester" and entry["requester"]["actor"] == "user:requester"
    # 2. which version ran
    release = entry["release"]
    assert release["release_id"] == run.release_id and len(release["manifest_digest"]) == 64
    assert "refund_flow" in release["artifacts"]["workflow"]
    # 3. what data and corpus it used
    assert len(entry["data"]["input_digest"]) == 64 and entry["data"]["sensitivity"] == run.sensitivity
    assert entry["data"]["corpora"] == release["artifacts"].get("corpus", {})
    # 4. which policy checks passed
    points = [(d["decision_point"], d["allow"], d["require_approval"]) for d in entry["policy"]["decisions"]]
    assert ("run.start", True, False) in points and ("tool.call", True, True) in points
    assert all(len(d["bundle_digest"]) == 64 for d in entry["policy"]["decisions"])
    # 5. who approved it
    [request] = entry["approvals"]["requests"]
    assert request["status"] == "approved" and request["proposed_action"]["tool"] == "payments.charge"
    [review] = request["reviews"]
    assert (review["reviewer"], review["decision"], review["approver_group"]) == (
        "reviewer",
        "approve",
        "reviewer",
    )
    assert review["action_hash"] == request["action_hash"] and review["policy_decision"] is not None
    assert review["policy_decision"] in [d["id"] for d in entry["policy"]["decisions"]]
    [decision] = entry["approvals"]["decisions"]
    assert decision["actor"] == "user:reviewer" and decision["decision"] == "approved"
    assert (
        decision["reason"] == "customer was charged twice"
        and decision["action_hash"] == request["action_hash"]
    )
    # 6. how it is undone
    effects = {effect["tool"]: effect for effect in entry["effects"]["effects"]}
    charge = Effect.objects.get(tool="payments.charge")
    assert effects["payments.charge"]["status"] == "compensated"
    assert effects["payments.charge"]["idempotency_key"] == charge.idempotency_key
    assert effects["payments.charge"]["compensation_tool"] == "payments.refund"
    assert effects["payments.charge"]["compensation_result"] is not None
    # ... and the trail that proves it, in chain order
    trail = [event["seq"] for event in entry["audit_trail"]["events"]]
    assert trail == sorted(trail) and len(trail) == AuditEvent.objects.filter(run_id=str(run.pk)).count()
    assert {control for part in entry.values() for control in part.get("controls", [])} == set(CONTROLS)


def test_packages_verify_offline_in_every_format(approved_and_compensated_run, auditor, tmp_path):
    scope = Scope(run_id=str(approved_and_compensated_run.pk))
    for fmt in ("json", "csv", "pdf"):
        path = tmp_path / f"package.{fmt}.zip"
        path.write_bytes(package_bytes(scope, fmt, auditor))
        manifest = verifier.verify_package(path)
        assert set(manifest["files"]) == {f"evidence.{fmt}", "public_key.pem"}
        assert manifest["runs"] == 1 and manifest["scope"]["run"] == str(approved_and_compensated_run.pk)
    assert read_member(path.read_bytes(), "evidence.pdf").startswith(b"%PDF")
    csv_text = read_member((tmp_path / "package.csv.zip").read_bytes(), "evidence.csv").decode()
    assert csv_text.splitlines()[0] == "run_id,section,question,controls,at,actor,detail"
    assert "payments.refund" in csv_text and "AC-5" in csv_text


def test_changing_any_byte_of_a_package_fails_verification(approved_and_compensated_run, auditor, tmp_path):
    data = package_bytes(Scope(run_id=str(approved_and_compensated_run.pk)), "json", auditor)
    path = tmp_path / "package.zip"
    path.write_bytes(data)
    verifier.verify_package(path)
    positions = [*range(0, len(data), max(1, len(data) // 150)), *range(len(data) - 90, len(data))]
    for position in positions:
        tampered = bytearray(data)
        tampered[position] ^= 0x01
        path.write_bytes(bytes(tampered))
        with pytest.raises(verifier.Failed):
            verifier.verify_package(path)


def test_a_member_flagged_as_encrypted_is_reported_as_damage_not_a_crash(
    approved_and_compensated_run, auditor, tmp_path
):
    data = bytearray(package_bytes(Scope(run_id=str(approved_and_compensated_run.pk)), "json", auditor))
    entry = data.index(b"PK\x01\x02")  # the central directory's first entry
    while data[entry + 46 : entry + 46 + len(b"public_key.pem")] != b"public_key.pem":
        entry = data.index(b"PK\x01\x02", entry + 4)
    data[entry + 8] |= 0x01  # its general purpose flag, bit 0: encrypted
    path = tmp_path / "package.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(verifier.Failed, match=r"public_key\.pem cannot be read"):
        verifier.verify_package(path)


def _package_signed_by_its_own_key(members: dict[str, bytes]) -> bytes:
    """A package as anyone can make one: any members, signed as Baton signs, by a key of its own
    (what the verifier meets when --public-key is not given)."""
    import base64
    import hashlib
    import io
    import zipfile

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in {"public_key.pem": public_pem, **members}.items():
            archive.writestr(name, content)
        if "manifest.json" in members:
            archive.writestr("manifest.sig", base64.b64encode(key.sign(members["manifest.json"])))
        archive.comment = b"\0" * verifier.SIGNATURE_BYTES
    body = buffer.getvalue()[: -verifier.SIGNATURE_BYTES]
    return body + base64.b64encode(key.sign(hashlib.sha256(body).digest()))


@pytest.mark.parametrize(
    ("members", "refusal"),
    [
        # 100 MB of spaces: a valid manifest, were it read whole.
        ({"manifest.json": b"{}" + b" " * 100_000_000}, r"manifest\.json unpacks to more than"),
        (
            {
                "manifest.json": json.dumps(
                    {"files": {"ledger.json": {"sha256": "00", "bytes": 10}, "public_key.pem": {}}}
                ).encode(),
                "ledger.json": b"[" + b" " * 100_000_000 + b"]",
            },
            r"ledger\.json unpacks to more than the 10 bytes its manifest gives",
        ),
    ],
)
def test_a_package_that_unpacks_to_more_than_it_says_is_refused_unread(members, refusal, tmp_path):
    path = tmp_path / "package.zip"
    path.write_bytes(_package_signed_by_its_own_key(members))
    assert path.stat().st_size < 1_000_000  # deflate: 100 MB of spaces in ~100 KB
    with pytest.raises(verifier.Failed, match=refusal):
        verifier.verify_package(path)


def test_a_package_signed_by_another_key_is_refused_when_the_deployment_key_is_given(
    approved_and_compensated_run, auditor, tmp_path
):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = tmp_path / "package.zip"
    path.write_bytes(package_bytes(Scope(run_id=str(approved_and_compensated_run.pk)), "json", auditor))
    other = Ed25519PrivateKey.generate().public_key()
    other_pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(verifier.Failed, match="different key"):
        verifier.verify_package(path, other_pem)
    deployment_pem = read_member(path.read_bytes(), "public_key.pem")
    assert verifier.verify_package(path, deployment_pem)["runs"] == 1


def test_the_command_and_the_standalone_script_agree(approved_and_compensated_run, auditor, tmp_path, capsys):
    from django.core.management import CommandError, call_command

    path = tmp_path / "package.zip"
    data = package_bytes(Scope(run_id=str(approved_and_compensated_run.pk)), "json", auditor)
    path.write_bytes(data)
    call_command("evidence_verify", str(path))
    assert capsys.readouterr().out.startswith(f"OK: {path}")
    path.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    with pytest.raises(CommandError):
        call_command("evidence_verify", str(path))
    assert "FAILED" in capsys.readouterr().out


def test_an_export_is_audited_and_carries_a_fresh_signed_checkpoint(approved_and_compensated_run, auditor):
    scope = Scope(run_id=str(approved_and_compensated_run.pk))
    package = evidence_prepare(scope=scope, format="json", actor=actor_for(auditor))
    head = AuditEvent.objects.order_by("-seq").first()
    assert head.action == "evidence.exported" and head.actor == "user:auditor"
    assert head.payload == {"scope": scope.as_dict(), "format": "json", "runs": 1}
    assert package.checkpoint.reason == AuditCheckpoint.Reason.EXPORT
    assert package.checkpoint.seq == head.seq - 1  # the head when the export began


def test_a_release_scope_carries_the_release_and_its_runs(approved_and_compensated_run, auditor):
    run = approved_and_compensated_run
    evidence = evidence_json(package_bytes(Scope(release_id=run.release_id), "json", auditor))
    assert evidence["release"]["id"] == run.release_id and evidence["release"]["controls"] == ["CM-3"]
    assert [entry["run"]["id"] for entry in evidence["runs"]] == [str(run.pk)]


def test_collecting_evidence_takes_the_same_queries_for_few_or_many_runs(auditor):
    from datetime import timedelta

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from evidence.collect import run_evidence
    from tests.factories import RunFactory

    def queries_for(count: int) -> int:
        RunFactory.create_batch(count)
        scope = Scope(since=timezone.now() - timedelta(hours=1))
        with CaptureQueriesContext(connection) as captured:
            collected = list(run_evidence(scope.runs()))
        assert len(collected) >= count
        return len(captured)

    assert queries_for(2) == queries_for(12)
