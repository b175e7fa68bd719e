"""Signed evidence packages: a ZIP of the evidence, a signed manifest of its files, and a
signature over every byte of the package.

Layout:
  evidence.json | evidence.csv | evidence.pdf   the evidence itself
  public_key.pem                                the deployment's Ed25519 public key
  manifest.json                                 scope, creator, file digests, chain checkpoint
  manifest.sig                                  Ed25519 signature of manifest.json's bytes
  ZIP comment (the last 88 bytes of the file)    Ed25519 signature of sha256(every byte before it)

The manifest lets someone check extracted files; the trailing signature covers the container
too, so changing any single byte of the file fails verification (docs/verify_evidence.py).
The package is produced as a stream: the evidence is written run by run, never held whole.
"""

import csv
import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fpdf import FPDF

from controlplane.canonical import canonical_json
from registry.models import Release

from . import signing
from .collect import CONTROLS, Scope, release_evidence, run_evidence
from .models import AuditCheckpoint

FORMAT_VERSION = "baton-evidence/1"
SIGNATURE_BYTES = 88  # base64 of a 64-byte Ed25519 signature
_CSV_COLUMNS = ["run_id", "section", "question", "controls", "at", "actor", "detail"]


@dataclass(frozen=True)
class EvidencePackage:
    scope: Scope
    format: str
    runs_total: int
    checkpoint: AuditCheckpoint
    created_by: str
    created_at: str

    def chunks(self, progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
        """The package's bytes, in order; `progress(runs_done)` is called as runs are written."""
        sink = _Sink()
        archive = zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_DEFLATED)
        files: dict[str, dict] = {}
        name = f"evidence.{self.format}"
        with archive.open(name, mode="w", force_zip64=True) as entry:
            hasher, size = hashlib.sha256(), 0
            for part in self._evidence(progress):
                entry.write(part)
                hasher.update(part)
                size += len(part)
                if sink.pending() > 64 * 1024:
                    yield sink.drain()
        files[name] = {"sha256": hasher.hexdigest(), "bytes": size}
        public_key = signing.public_key_pem().encode()
        archive.writestr("public_key.pem", public_key)
        files["public_key.pem"] = {"sha256": hashlib.sha256(public_key).hexdigest(), "bytes": len(public_key)}
        manifest = canonical_json(self._manifest(files))
        archive.writestr("manifest.json", manifest)
        archive.writestr("manifest.sig", signing.sign(manifest))
        archive.comment = b"\0" * SIGNATURE_BYTES
        archive.close()
        yield sink.drain_signed()

    def _manifest(self, files: dict) -> dict:
        return {
            "format": FORMAT_VERSION,
            "scope": self.scope.as_dict(),
            "evidence_format": self.format,
            "runs": self.runs_total,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "key_id": signing.key_id(),
            "files": files,
            "chain_checkpoint": {**self.checkpoint.statement(), "signature": self.checkpoint.signature},
            "controls": CONTROLS,
        }

    def _evidence(self, progress) -> Iterator[bytes]:
        runs = _counted(run_evidence(self.scope.runs().iterator(chunk_size=500)), progress)
        if self.format == "json":
            return self._json(runs)
        if self.format == "csv":
            return _csv(runs)
        return iter([_pdf(self, list(runs))])

    def _json(self, runs) -> Iterator[bytes]:
        head = {"format": FORMAT_VERSION, "scope": self.scope.as_dict(), "controls": CONTROLS}
        if self.scope.release_id:
            head["release"] = release_evidence(self._release())
        yield json.dumps(head)[:-1].encode() + b', "runs": ['
        for number, run in enumerate(runs):
            yield (b",\n" if number else b"\n") + json.dumps(run, sort_keys=True).encode()
        yield b"\n]}\n"

    def _release(self) -> Release:
        return Release.objects.select_related("author").get(pk=self.scope.release_id)


def _counted(runs: Iterator[dict], progress) -> Iterator[dict]:
    for done, run in enumerate(runs, start=1):
        yield run
        if progress and (done % 50 == 0):
            progress(done)


def _csv(runs) -> Iterator[bytes]:
    """One row per piece of evidence, so that a spreadsheet can filter by run, section or control."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(_CSV_COLUMNS)
    for run in runs:
        for row in _csv_rows(run):
            writer.writerow(row)
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue().encode()


def _csv_rows(run: dict) -> Iterator[list]:
    run_id, started = run["run"]["id"], run["run"]["created_at"]

    def row(section: str, at: str | None, actor: str, detail: dict) -> list:
        part = run[section]
        controls = " ".join(part["controls"])
        return [
            run_id,
            section,
            part.get("question", ""),
            controls,
            at or "",
            actor,
            json.dumps(detail, sort_keys=True),
        ]

    requester = run["requester"]
    who = {"user": requester["user"], "idempotency_key": requester["idempotency_key"]}
    yield row("requester", started, requester["actor"], who)
    release = run["release"]
    yield row("release", started, "", {k: release[k] for k in ("release_id", "manifest_digest", "channel")})
    yield row("data", started, "", {k: run["data"][k] for k in ("input_digest", "sensitivity", "corpora")})
    for decision in run["policy"]["decisions"]:
        yield row("policy", decision["at"], "", decision)
    for request in run["approvals"]["requests"]:
        yield row("approvals", request["created_at"], "", request)
    for decision in run["approvals"]["decisions"]:
        yield row("approvals", decision["at"], decision["actor"], decision)
    for effect in run["effects"]["effects"]:
        yield row("effects", None, "", effect)
    for event in run["audit_trail"]["events"]:
        yield row("audit_trail", event["at"], event["actor"], event)


def _pdf(package: EvidencePackage, runs: list[dict]) -> bytes:
    """A readable report for people; the JSON and CSV exports carry the same facts for machines."""
    pdf = FPDF()
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("helvetica", "B", 16)
    _line(pdf, "Baton evidence package", height=10)
    pdf.set_font("helvetica", size=9)
    _line(pdf, f"Scope: {json.dumps(package.scope.as_dict())}")
    _line(pdf, f"Created {package.created_at} by {package.created_by}; {len(runs)} run(s).")
    _line(pdf, f"Chain checkpoint: event #{package.checkpoint.seq}, hash {package.checkpoint.head_hash}")
    for control, meaning in CONTROLS.items():
        _line(pdf, f"{control}: {meaning}")
    for run in runs:
        pdf.add_page()
        pdf.set_font("helvetica", "B", 12)
        _line(pdf, f"Run {run['run']['id']} ({run['run']['workflow']}, {run['run']['status']})", height=8)
        for section in ("requester", "release", "data", "policy", "approvals", "effects"):
            part = run[section]
            pdf.set_font("helvetica", "B", 10)
            _line(pdf, f"{part['question']}  [{', '.join(part['controls'])}]", height=7)
            pdf.set_font("helvetica", size=8)
            details = {key: value for key, value in part.items() if key not in ("question", "controls")}
            _line(pdf, json.dumps(details, indent=1, sort_keys=True))
        pdf.set_font("helvetica", "B", 10)
        _line(pdf, f"Audit trail [{', '.join(run['audit_trail']['controls'])}]", height=7)
        pdf.set_font("helvetica", size=8)
        for event in run["audit_trail"]["events"]:
            _line(
                pdf, f"#{event['seq']} {event['at']} {event['actor']} {event['action']} {event['hash'][:16]}"
            )
    return bytes(pdf.output())


def _line(pdf: FPDF, text: str, height: float = 4.5) -> None:
    # The built-in PDF fonts cover Latin-1 only; anything else is shown as '?', never dropped silently.
    pdf.multi_cell(
        0, height, text.encode("latin-1", "replace").decode("latin-1"), new_x="LMARGIN", new_y="NEXT"
    )


class _Sink:
    """A write-only stream for ZipFile that hands its bytes out as they are produced.

    Without `seek`, ZipFile writes sizes after each entry (data descriptors), which is what
    lets the package stream.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._offset = 0
        self._digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._buffer += data
        self._offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self._offset

    def flush(self) -> None:
        pass

    def pending(self) -> int:
        return len(self._buffer)

    def drain(self) -> bytes:
        data = bytes(self._buffer)
        self._digest.update(data)
        self._buffer.clear()
        return data

    def drain_signed(self) -> bytes:
        """The rest of the package, its placeholder comment replaced by the signature of all before it."""
        body = bytes(self._buffer[:-SIGNATURE_BYTES])
        self._digest.update(body)
        self._buffer.clear()
        signature = signing.sign(self._digest.digest()).encode()
        assert len(signature) == SIGNATURE_BYTES
        return body + signature
