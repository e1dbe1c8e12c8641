#!/usr/bin/env python3
"""A latentdb gRPC client in Python, written only from proto/latentdb/v1/latentdb.proto.

Generates the stubs with grpcio-tools at run time into a temporary directory, then goes
through: create a collection, streaming upsert, filtered search, get, delete, and the error
codes (NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAUTHENTICATED).

    pip install grpcio grpcio-tools
    latentdb serve --data /tmp/db --addr 127.0.0.1:50051 &
    python3 examples/python_client.py --addr 127.0.0.1:50051 [--api-key KEY]

Exits 0 when every check passes; prints one line per step.
"""

import argparse
import importlib
import json
import math
import os
import random
import sys
import tempfile

import grpc
from grpc_tools import protoc

try:  # grpcio-tools ships the well-known protos (google/protobuf/struct.proto).
    from importlib.resources import files as _resource_files
except ImportError:  # pragma: no cover
    _resource_files = None

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PROTO_ROOT = os.path.join(REPO, "proto")


def generate_stubs(proto_root):
    """Compiles latentdb.proto into a temp dir and imports the generated modules."""
    out = tempfile.mkdtemp(prefix="latentdb-stubs-")
    well_known = str(_resource_files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        os.path.join(proto_root, "latentdb", "v1", "latentdb.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed to compile latentdb.proto")
    # Generated modules import each other as latentdb.v1.*: make them packages.
    for pkg in ("latentdb", os.path.join("latentdb", "v1")):
        open(os.path.join(out, pkg, "__init__.py"), "a").close()
    sys.path.insert(0, out)
    pb = importlib.import_module("latentdb.v1.latentdb_pb2")
    rpc = importlib.import_module("latentdb.v1.latentdb_pb2_grpc")
    return pb, rpc


def unit(v):
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / n for x in v]


def expect_code(step, code, fn):
    """Calls fn and checks it fails with `code`; returns the error."""
    try:
        fn()
    except grpc.RpcError as e:
        if e.code() != code:
            raise SystemExit(f"FAIL {step}: expected {code.name}, got {e.code().name}: {e.details()}")
        print(f"ok   {step}: {code.name} ({e.details()})")
        return e
    raise SystemExit(f"FAIL {step}: expected {code.name}, the call succeeded")


def check(step, cond, detail=""):
    if not cond:
        raise SystemExit(f"FAIL {step} {detail}")
    print(f"ok   {step}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addr", default="127.0.0.1:50051")
    ap.add_argument("--api-key", default=os.environ.get("LATENTDB_API_KEY"))
    ap.add_argument("--proto-root", default=DEFAULT_PROTO_ROOT)
    ap.add_argument("--collection", default="pyclient")
    args = ap.parse_args()

    pb, rpc = generate_stubs(args.proto_root)
    from google.protobuf import struct_pb2  # noqa: E402 (after stub generation on purpose)

    channel = grpc.insecure_channel(args.addr)
    grpc.channel_ready_future(channel).result(timeout=30)
    stub = rpc.LatentDbStub(channel)
    md = [("authorization", f"Bearer {args.api_key}")] if args.api_key else []

    # Authentication: with a key configured on the server, a call without it is refused.
    if args.api_key:
        expect_code(
            "no api key",
            grpc.StatusCode.UNAUTHENTICATED,
            lambda: stub.ListCollections(pb.ListCollectionsRequest()),
        )
        stub.ListCollections(pb.ListCollectionsRequest(), metadata=[("x-api-key", args.api_key)])
        print("ok   x-api-key header accepted")

    dim = 16
    name = args.collection
    info = stub.CreateCollection(
        pb.CreateCollectionRequest(name=name, dimension=dim, metric=pb.METRIC_COSINE), metadata=md
    )
    check("create collection", info.name == name and info.dimension == dim, str(info))
    expect_code(
        "create again",
        grpc.StatusCode.ALREADY_EXISTS,
        lambda: stub.CreateCollection(pb.CreateCollectionRequest(name=name, dimension=dim), metadata=md),
    )

    # Streaming upsert: 5 batches of 40 documents.
    rng = random.Random(7)
    vectors = {}

    def batches():
        for b in range(5):
            docs = []
            for i in range(40):
                doc_id = f"doc-{b}-{i}"
                v = unit([rng.uniform(-1, 1) for _ in range(dim)])
                vectors[doc_id] = v
                meta = struct_pb2.Struct()
                meta.update({"batch": b, "even": i % 2 == 0, "tags": ["a", "b"] if i % 3 == 0 else []})
                docs.append(pb.Document(id=doc_id, text=f"document {doc_id}", metadata=meta, vector=v))
            yield pb.UpsertRequest(collection=name if b == 0 else "", documents=docs)

    resp = stub.UpsertStream(batches(), metadata=md)
    check("streaming upsert", resp.written == 200 and resp.batches == 5, str(resp))
    count = stub.Count(pb.CountRequest(collection=name), metadata=md).count
    check("count", count == 200, f"count={count}")

    # Filtered search (JSON filter): only batch 3, even documents.
    query = vectors["doc-3-4"]
    hits = stub.Search(
        pb.SearchRequest(
            collection=name,
            vector=query,
            k=10,
            filter=pb.Filter(json=json.dumps({"batch": 3, "even": True})),
        ),
        metadata=md,
    ).hits
    check("filtered search top hit", hits and hits[0].id == "doc-3-4", str([h.id for h in hits]))
    check(
        "filtered search respects the filter",
        all(h.metadata["batch"] == 3 and h.metadata["even"] for h in hits) and len(hits) == 10,
    )
    # The same filter as a Struct.
    f = struct_pb2.Struct()
    f.update({"batch": {"$gte": 4}})
    hits = stub.Search(
        pb.SearchRequest(collection=name, vector=query, k=5, filter=pb.Filter(structured=f), with_vectors=True),
        metadata=md,
    ).hits
    check("structured filter", len(hits) == 5 and all(h.metadata["batch"] >= 4 for h in hits))
    check("vectors returned on request", all(len(h.vector) == dim for h in hits))

    # Get: found and missing.
    got = stub.Get(pb.GetRequest(collection=name, ids=["doc-0-1", "missing"], with_vectors=True), metadata=md)
    check("get", [r.id for r in got.records] == ["doc-0-1"] and list(got.missing_ids) == ["missing"])
    check("get returns text", got.records[0].text == "document doc-0-1")
    check(
        "get returns the vector",
        all(abs(a - b) < 1e-6 for a, b in zip(got.records[0].vector, vectors["doc-0-1"])),
    )
    expect_code(
        "get require_all",
        grpc.StatusCode.NOT_FOUND,
        lambda: stub.Get(pb.GetRequest(collection=name, ids=["missing"], require_all=True), metadata=md),
    )

    # Delete by ids and by filter.
    deleted = stub.Delete(pb.DeleteRequest(collection=name, ids=["doc-0-0", "doc-0-1", "nope"]), metadata=md)
    check("delete by ids", sorted(deleted.deleted_ids) == ["doc-0-0", "doc-0-1"])
    deleted = stub.Delete(pb.DeleteRequest(collection=name, filter=pb.Filter(json='{"batch": 1}')), metadata=md)
    check("delete by filter", len(deleted.deleted_ids) == 40)
    count = stub.Count(pb.CountRequest(collection=name), metadata=md).count
    check("count after delete", count == 158, f"count={count}")

    # Error codes.
    expect_code(
        "missing collection",
        grpc.StatusCode.NOT_FOUND,
        lambda: stub.Count(pb.CountRequest(collection="no-such-collection"), metadata=md),
    )
    expect_code(
        "wrong dimension",
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: stub.Search(pb.SearchRequest(collection=name, vector=[1.0, 2.0], k=3), metadata=md),
    )
    expect_code(
        "bad filter",
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: stub.Search(
            pb.SearchRequest(collection=name, vector=query, filter=pb.Filter(json='{"batch": {"$nope": 1}}')),
            metadata=md,
        ),
    )
    expect_code(
        "k over the limit",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        lambda: stub.Search(pb.SearchRequest(collection=name, vector=query, k=10_000_000), metadata=md),
    )

    # A stream whose third batch is bad: the first two stay, the status names batch 2.
    def bad_batches():
        for b in range(4):
            docs = [pb.Document(id=f"s-{b}-{i}", vector=unit([1.0] * dim)) for i in range(10)]
            if b == 2:
                docs[3] = pb.Document(id="s-bad", vector=[1.0, 2.0])
            yield pb.UpsertRequest(collection=name, documents=docs)

    err = expect_code(
        "stream with a bad batch", grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.UpsertStream(bad_batches(), metadata=md)
    )
    trailers = dict(err.trailing_metadata() or ())
    check("failed batch reported", trailers.get("latentdb-failed-batch") == "2", str(trailers))
    got = stub.Get(pb.GetRequest(collection=name, ids=["s-0-0", "s-1-9", "s-2-0", "s-3-0"]), metadata=md)
    check("acknowledged batches kept", [r.id for r in got.records] == ["s-0-0", "s-1-9"], str(got.missing_ids))

    # An empty filter deletes nothing (it would match everything); all_documents empties it.
    before = stub.Count(pb.CountRequest(collection=name), metadata=md).count
    expect_code(
        "empty delete filter",
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: stub.Delete(pb.DeleteRequest(collection=name, filter=pb.Filter(json="{}")), metadata=md),
    )
    count = stub.Count(pb.CountRequest(collection=name), metadata=md).count
    check("empty filter deleted nothing", count == before, f"count={count}, before={before}")
    deleted = stub.Delete(pb.DeleteRequest(collection=name, all_documents=True), metadata=md)
    count = stub.Count(pb.CountRequest(collection=name), metadata=md).count
    check("delete all_documents", deleted.deleted_count == before and count == 0, str(deleted))

    stub.DeleteCollection(pb.DeleteCollectionRequest(name=name), metadata=md)
    expect_code(
        "deleted collection",
        grpc.StatusCode.NOT_FOUND,
        lambda: stub.GetCollection(pb.GetCollectionRequest(name=name), metadata=md),
    )
    print("python client: all checks passed")


if __name__ == "__main__":
    main()
