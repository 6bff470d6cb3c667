"""Protobuf reference data for the Elixir codec tests (elixir_client/test/proto).

Python's `protobuf` package is the reference implementation: this script
serialises and parses hf_bridge messages with the generated pb2 classes and
prints the results as Elixir term text that the ExUnit tests read with
`Code.eval_string/1`.

Modes (the first argument):

  descriptor  every message of the wire contract with its fields, numbers,
              types, labels and oneofs, and every rpc of the service.
  golden      serialised bytes of several populated instances of every
              message (hand-picked edge cases plus seeded random ones),
              including inputs with unknown fields, with the expected
              decoded values.
  parse       reads lines "<Message> <hex>" from stdin (or the file named
              by the second argument), parses each with
              pb2 and prints, per line, {:ok, values, canonical_bytes} or
              {:error, reason}.
  json-parse  parses each line of the file named by the second argument
              with Python's json module and prints the terms.
  features    a `datasets` Features.to_dict() JSON document and the
              expected decoded term.

Run with HF_HUB_OFFLINE=1 (the `features` mode imports `datasets`).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import struct
import sys
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, unknown_fields  # noqa: E402
from google.protobuf.descriptor import Descriptor, FieldDescriptor  # noqa: E402
from google.protobuf.message import DecodeError, Message  # noqa: E402

from py_worker.wire import pb  # noqa: E402

PACKAGE = pb.DESCRIPTOR.package


# ---- Elixir term text -------------------------------------------------------


class Atom(str):
    """A string printed as an Elixir atom."""


def ex(value: Any) -> str:
    """Renders a Python value as Elixir term text."""
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, Atom):
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            return ":" + value
        return ':"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ex_float(value)
    if isinstance(value, str):
        return ex_binary(value.encode("utf-8"))
    if isinstance(value, (bytes, bytearray)):
        return ex_binary(bytes(value))
    if isinstance(value, tuple):
        return "{" + ", ".join(ex(v) for v in value) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(ex(v) for v in value) + "]"
    if isinstance(value, dict):
        return "%{" + ", ".join(f"{ex(k)} => {ex(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot render {type(value)!r}")


def ex_float(x: float) -> str:
    if math.isnan(x):
        return ":nan"
    if math.isinf(x):
        return ":infinity" if x > 0 else ":neg_infinity"
    text = repr(x)
    mantissa, _, exp = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    if exp:
        return f"{mantissa}e{int(exp)}"
    return mantissa


def ex_binary(data: bytes) -> str:
    return "<<" + ",".join(str(b) for b in data) + ">>"


# ---- messages -> Elixir maps ---------------------------------------------------


def is_map_field(f: FieldDescriptor) -> bool:
    return f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.GetOptions().map_entry


def field_value(f: FieldDescriptor, v: Any) -> Any:
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        return to_term(v)
    if f.type == FieldDescriptor.TYPE_ENUM:
        ev = f.enum_type.values_by_number.get(v)
        return Atom(ev.name) if ev is not None else v
    return v


def to_term(m: Message) -> dict:
    """Every field of `m` as the Elixir decoder reports it."""
    out: dict = {}
    for f in m.DESCRIPTOR.fields:
        v = getattr(m, f.name)
        if is_map_field(f):
            vf = f.message_type.fields_by_name["value"]
            out[Atom(f.name)] = {k: field_value(vf, v[k]) for k in v}
        elif f.is_repeated:
            out[Atom(f.name)] = [field_value(f, x) for x in v]
        elif f.has_presence and not m.HasField(f.name):
            out[Atom(f.name)] = None
        else:
            out[Atom(f.name)] = field_value(f, v)
    return out


# ---- descriptor dump -------------------------------------------------------------


TYPE_NAMES = {number: name[len("TYPE_") :].lower() for name, number in descriptor_pb2.FieldDescriptorProto.Type.items()}


def descriptor() -> dict:
    fdp = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(fdp)
    messages: dict = {}

    def walk(msg: descriptor_pb2.DescriptorProto, prefix: str) -> None:
        name = prefix + msg.name
        fields = []
        for f in msg.field:
            oneof = None
            if f.HasField("oneof_index") and not f.proto3_optional:
                oneof = Atom(msg.oneof_decl[f.oneof_index].name)
            type_name = f.type_name
            if type_name.startswith("." + PACKAGE + "."):
                type_name = Atom(type_name[len(PACKAGE) + 2 :])
            else:
                type_name = None
            fields.append(
                {
                    Atom("name"): Atom(f.name),
                    Atom("number"): f.number,
                    Atom("type"): Atom(TYPE_NAMES[f.type]),
                    Atom("type_name"): type_name,
                    Atom("repeated"): f.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
                    Atom("proto3_optional"): f.proto3_optional,
                    Atom("oneof"): oneof,
                }
            )
        messages[Atom(name)] = fields
        for nested in msg.nested_type:
            walk(nested, name + ".")

    for m in fdp.message_type:
        walk(m, "")

    rpcs = {}
    for svc in fdp.service:
        for meth in svc.method:
            rpcs[Atom(meth.name)] = {
                Atom("path"): f"/{PACKAGE}.{svc.name}/{meth.name}",
                Atom("input"): Atom(meth.input_type[len(PACKAGE) + 2 :]),
                Atom("output"): Atom(meth.output_type[len(PACKAGE) + 2 :]),
                Atom("server_streaming"): meth.server_streaming,
                Atom("client_streaming"): meth.client_streaming,
            }
    return {
        Atom("package"): PACKAGE,
        Atom("messages"): messages,
        Atom("message_order"): [Atom(m.name) for m in fdp.message_type],
        Atom("rpcs"): rpcs,
    }


# ---- instances -------------------------------------------------------------------

U64_MAX = 2**64 - 1
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
UNICODE = "héllo wörld ✓ 日本語 𝄞 emoji 🤗"


def random_scalar(f: FieldDescriptor, rng: random.Random) -> Any:
    t = f.type
    T = FieldDescriptor
    pick = rng.random()
    if t in (T.TYPE_INT64, T.TYPE_SINT64, T.TYPE_SFIXED64):
        return rng.choice([0, 1, -1, I64_MIN, I64_MAX, rng.randint(I64_MIN, I64_MAX), rng.randint(-300, 300)])
    if t in (T.TYPE_UINT64, T.TYPE_FIXED64):
        return rng.choice([0, 1, 127, 128, 16383, 16384, U64_MAX, rng.randint(0, U64_MAX), rng.randint(0, 1000)])
    if t in (T.TYPE_INT32, T.TYPE_SINT32, T.TYPE_SFIXED32):
        return rng.choice([0, -1, -(2**31), 2**31 - 1, rng.randint(-(2**31), 2**31 - 1)])
    if t in (T.TYPE_UINT32, T.TYPE_FIXED32):
        return rng.choice([0, 1, 2**32 - 1, rng.randint(0, 2**32 - 1), rng.randint(0, 300)])
    if t == T.TYPE_BOOL:
        return pick < 0.5
    if t in (T.TYPE_DOUBLE, T.TYPE_FLOAT):
        v = rng.choice([0.0, -0.0, 2.5, -1e300, 1e-300, 5e-324, rng.uniform(-1e6, 1e6), math.inf, -math.inf, 0.1])
        if t == T.TYPE_FLOAT:
            v = struct.unpack("<f", struct.pack("<f", max(min(v, 3e38), -3e38) if math.isfinite(v) else v))[0]
        return v
    if t == T.TYPE_STRING:
        n = rng.randint(0, 12)
        return "".join(rng.choice("abcXYZ _/.-" + "éß✓日𝄞🤗\n\t\"\\") for _ in range(n))
    if t == T.TYPE_BYTES:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 24)))
    if t == T.TYPE_ENUM:
        return rng.choice([v.number for v in f.enum_type.values])
    raise TypeError(f"unhandled type {t}")


def fill_random(m: Message, rng: random.Random, depth: int = 0) -> Message:
    d: Descriptor = m.DESCRIPTOR
    chosen_oneofs = {o.name: rng.choice(list(o.fields) + [None]) for o in d.oneofs}
    for f in d.fields:
        oneof = f.containing_oneof
        if oneof is not None and oneof.name in chosen_oneofs and not oneof.name.startswith("_"):
            if chosen_oneofs[oneof.name] is not f:
                continue
        elif rng.random() < 0.25:
            continue
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            if f.is_repeated:
                for _ in range(rng.randint(0, 3)):
                    fill_random(getattr(m, f.name).add(), rng, depth + 1)
            else:
                sub = getattr(m, f.name)
                sub.SetInParent()
                fill_random(sub, rng, depth + 1)
        elif f.is_repeated:
            getattr(m, f.name).extend(random_scalar(f, rng) for _ in range(rng.randint(0, 4)))
        else:
            setattr(m, f.name, random_scalar(f, rng))
    return m


def hand_cases() -> list[tuple[str, Message]]:
    """Edge cases chosen by hand: (label, message)."""
    S = pb.Scalar
    cases: list[tuple[str, Message]] = [
        ("oneof int zero is set", S(int_value=0)),
        ("oneof negative int64", S(int_value=I64_MIN)),
        ("oneof int64 max", S(int_value=I64_MAX)),
        ("oneof double", S(float_value=2.5)),
        ("oneof double negative zero", S(float_value=-0.0)),
        ("oneof double nan", S(float_value=math.nan)),
        ("oneof double -inf", S(float_value=-math.inf)),
        ("oneof unicode string", S(string_value=UNICODE)),
        ("oneof empty string is set", S(string_value="")),
        ("oneof bool false is set", S(bool_value=False)),
        (
            "filter with nested and repeated scalars",
            pb.Filter(column="lang", op="in", value=S(string_value="x"), values=[S(string_value="en"), S(int_value=-3), S()]),
        ),
        (
            "filter clause",
            pb.FilterClause(all=[pb.Filter(column="a", op="<", value=S(float_value=1e-300)), pb.Filter()]),
        ),
        ("data files unicode patterns", pb.DataFiles(split="tráin", patterns=["data/*.parquet", UNICODE, ""])),
        (
            "dataset spec fully populated",
            pb.DatasetSpec(
                path="user/näme",
                config="default",
                split="train",
                revision="main",
                data_files=[pb.DataFiles(split="train", patterns=["a/*.json"]), pb.DataFiles()],
                columns=["text", "label", ""],
                filters=[pb.FilterClause(all=[pb.Filter(column="x", op=">=", value=S(int_value=5))])],
                shuffle=True,
                seed=U64_MAX,
                shuffle_buffer=2**32 - 1,
                num_shards=4,
                shard_index=3,
                skip=U64_MAX,
                take=12345678901234,
            ),
        ),
        ("dataset spec take zero is set", pb.DatasetSpec(path="p", take=0)),
        ("dataset spec take unset", pb.DatasetSpec(path="p", skip=0)),
        ("split info num_rows zero set, num_bytes unset", pb.SplitInfo(name="test", num_rows=0)),
        ("split info both set", pb.SplitInfo(name="train", num_rows=U64_MAX, num_bytes=1)),
        (
            "dataset info all byte values",
            pb.DatasetInfo(
                features_json='{"text": {"dtype": "string", "_type": "Value"}}',
                arrow_schema=bytes(range(256)),
                splits=[pb.SplitInfo(name="train", num_rows=10), pb.SplitInfo(name="test")],
                num_shards=7,
                builder="parquet",
                configs=["a", "b"],
                description=UNICODE * 3,
            ),
        ),
        ("open request empty spec is set", pb.OpenRequest(spec=pb.DatasetSpec(), batch_size=1024, max_batch_bytes=1 << 40)),
        ("open request no spec", pb.OpenRequest(batch_size=1)),
        (
            "session info",
            pb.SessionInfo(
                session_id="s-1",
                resume_token="tok",
                arrow_schema=b"\xff\x00\x80",
                features_json="{}",
                next_seq=U64_MAX,
                worker="w0",
                batch_size=2**32 - 1,
            ),
        ),
        ("read request", pb.ReadRequest(session_id="s", max_batches=3)),
        ("batch large payload", pb.Batch(seq=2**63, num_rows=300, arrow_ipc=bytes(range(256)) * 64, end_of_data=False)),
        ("batch end of data", pb.Batch(seq=9, end_of_data=True)),
        ("ack request", pb.AckRequest(session_id="s", seq=0)),
        ("ack response", pb.AckResponse(acked_seq=U64_MAX)),
        ("resume request", pb.ResumeRequest(resume_token=UNICODE)),
        ("close request", pb.CloseRequest(session_id="s")),
        ("close response", pb.CloseResponse()),
        (
            "export request",
            pb.ExportRequest(
                spec=pb.DatasetSpec(path="json", take=5),
                destination="s3://bucket/prefix",
                max_file_bytes=1 << 30,
                row_group_rows=100_000,
                compression="zstd",
                overwrite=True,
                content_defined_chunking=True,
                batch_size=10,
                resume=True,
            ),
        ),
        ("export progress total zero", pb.ExportProgress(rows=1, bytes=2, files=3, total_rows=0, elapsed_seconds=0.1)),
        ("export progress no total", pb.ExportProgress(rows=U64_MAX, elapsed_seconds=-0.0)),
        ("export result", pb.ExportResult(manifest_uri="/tmp/x/_manifest.json", manifest_json='{"files": []}', rows=5, bytes=6, files=1)),
        ("export event empty progress", pb.ExportEvent(progress=pb.ExportProgress())),
        ("export event result", pb.ExportEvent(result=pb.ExportResult(rows=10))),
    ]
    for name in pb.DESCRIPTOR.message_types_by_name:
        cases.append((f"{name} empty", getattr(pb, name)()))
    return cases


def unknown_tail() -> bytes:
    """Raw fields with numbers no hf_bridge message uses, of every wire type."""

    from py_worker.arrow_ipc import varint

    def key(num: int, wt: int) -> bytes:
        return varint((num << 3) | wt)

    return b"".join(
        [
            key(2000, 0) + varint(U64_MAX),
            key(2001, 1) + struct.pack("<d", 1.5),
            key(2002, 5) + struct.pack("<I", 7),
            key(2003, 2) + varint(5) + b"hello",
            # A group holding a varint and a nested group.
            key(2004, 3) + key(1, 0) + varint(1) + key(2, 3) + key(3, 5) + b"\x00\x00\x00\x00" + key(2, 4) + key(2004, 4),
            key(536870911, 0) + varint(1),
        ]
    )


def extended_spec_class() -> Callable[..., Message]:
    """A message type with DatasetSpec's fields plus fields DatasetSpec lacks."""
    pool = descriptor_pool.DescriptorPool()
    base = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(base)
    pool.Add(base)
    ext = descriptor_pb2.FileDescriptorProto(
        name="golden/extended.proto", package="golden_ext", syntax="proto3", dependency=[base.name]
    )
    msg = ext.message_type.add()
    pb.DatasetSpec.DESCRIPTOR.CopyToProto(msg)
    msg.name = "DatasetSpecPlus"
    F = descriptor_pb2.FieldDescriptorProto
    extra = [
        ("extra_int", 100, F.TYPE_INT64, F.LABEL_OPTIONAL, ""),
        ("extra_str", 101, F.TYPE_STRING, F.LABEL_OPTIONAL, ""),
        ("extra_fixed", 102, F.TYPE_FIXED64, F.LABEL_OPTIONAL, ""),
        ("extra_float", 103, F.TYPE_FLOAT, F.LABEL_OPTIONAL, ""),
        ("extra_packed", 104, F.TYPE_SINT32, F.LABEL_REPEATED, ""),
        ("extra_msg", 105, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, f".{PACKAGE}.DataFiles"),
    ]
    for name, number, typ, label, type_name in extra:
        fd = msg.field.add(name=name, number=number, type=typ, label=label)
        if type_name:
            fd.type_name = type_name
    pool.Add(ext)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("golden_ext.DatasetSpecPlus"))


def case(label: str, name: str, data: bytes) -> dict:
    m = getattr(pb, name)()
    m.ParseFromString(data)
    m.DiscardUnknownFields()
    return {
        Atom("label"): label,
        Atom("message"): Atom(name),
        Atom("bytes"): data,
        Atom("canonical"): m.SerializeToString(deterministic=True),
        Atom("expected"): to_term(m),
    }


def golden() -> list:
    out = []
    for label, m in hand_cases():
        out.append(case(label, m.DESCRIPTOR.name, m.SerializeToString(deterministic=True)))
    rng = random.Random(20240611)
    for name in pb.DESCRIPTOR.message_types_by_name:
        for i in range(4):
            m = fill_random(getattr(pb, name)(), rng)
            out.append(case(f"{name} random #{i}", name, m.SerializeToString(deterministic=True)))
    # Unknown fields: raw fields appended, interleaved, and a wider schema.
    tail = unknown_tail()
    for label, m in hand_cases()[:20]:
        data = m.SerializeToString()
        out.append(case(f"{label} + unknown tail", m.DESCRIPTOR.name, data + tail))
        out.append(case(f"{label} + unknown head", m.DESCRIPTOR.name, tail + data))
    plus = extended_spec_class()(
        path="p",
        seed=5,
        take=0,
        extra_int=-5,
        extra_str=UNICODE,
        extra_fixed=U64_MAX,
        extra_float=1.5,
        extra_packed=[-1, 0, 1, -(2**31)],
        extra_msg={"split": "x"},
    )
    out.append(case("DatasetSpec from a wider schema", "DatasetSpec", plus.SerializeToString()))
    # Non-canonical but valid encodings: unpacked repeated, repeated singular fields.
    out.append(case("last singular value wins", "AckRequest", b"\x0a\x01a\x10\x05\x0a\x01b\x10\x07"))
    out.append(case("message fields merge", "OpenRequest", b"\x0a\x03\x0a\x01x\x10\x05\x0a\x04\x1a\x02tr"))
    out.append(case("oneof last member wins", "Scalar", b"\x08\x05\x1a\x01s\x20\x01\x08\x07"))
    out.append(case("over-long varint bool", "Batch", b"\x20\x81\x80\x80\x80\x80\x80\x80\x80\x80\x00"))
    return out


def parse_lines(lines: list[str]) -> list:
    out = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        name, _, hexdata = line.partition(" ")
        m = getattr(pb, name)()
        try:
            m.ParseFromString(bytes.fromhex(hexdata))
        except DecodeError as e:
            out.append((Atom("error"), str(e)))
            continue
        unknown = len(unknown_fields.UnknownFieldSet(m))
        out.append((Atom("ok"), to_term(m), m.SerializeToString(deterministic=True), unknown))
    return out


def features() -> dict:
    import datasets

    feats = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["neg", "pos", "naïve ✓"]),
            "score": datasets.Value("float64"),
            "tokens": datasets.Sequence(datasets.Value("int32")),
            "nested": {"a": datasets.Value("int64"), "b": [datasets.Value("bool")]},
            "matrix": datasets.Array2D(shape=(2, 3), dtype="float32"),
            "translation": datasets.Translation(languages=["en", "fr"]),
            "image": datasets.Image(),
            "when": datasets.Value("timestamp[ms]"),
        }
    )
    doc = json.dumps(feats.to_dict(), ensure_ascii=False, indent=2)
    return {Atom("json"): doc, Atom("expected"): json.loads(doc)}


def main(argv: list[str]) -> int:
    mode = argv[1] if len(argv) > 1 else "golden"
    if mode == "descriptor":
        print(ex(descriptor()))
    elif mode == "golden":
        print(ex(golden()))
    elif mode == "parse":
        text = Path(argv[2]).read_text() if len(argv) > 2 else sys.stdin.read()
        print(ex(parse_lines(text.splitlines())))
    elif mode == "json-parse":
        # One JSON text per line; Python's json module is the reference reader.
        out = []
        # Split on "\n" only: str.splitlines() also splits on U+2028 etc.
        for line in Path(argv[2]).read_text(encoding="utf-8").split("\n")[:-1]:
            try:
                out.append((Atom("ok"), json.loads(line)))
            except ValueError as e:
                out.append((Atom("error"), str(e)))
        print(ex(out))
    elif mode == "features":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        print(ex(features()))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
