#!/usr/bin/env python3
"""Ingest a JSONL corpus into chromadb 1.x and into latentdb (`latentdb bench ingest`), with
the same model, and print both rates and their ratio.

The model: all-MiniLM-L6-v2 from latentdb's model cache (`latentdb model fetch` puts it in
`$LATENTDB_HOME/models/all-MiniLM-L6-v2`, default `~/.cache/latentdb/models/...`). No ONNX
file of it is published in a package registry, so this script writes one from the same
`model.safetensors` with the `onnx` package (a plain BERT graph: embeddings, 6 encoder layers
with exact erf GELU, masked mean pooling, L2 normalisation) and checks its vectors against
`latentdb embed --model default` before measuring (cosine >= 0.9999 on every probe text).
chromadb gets this graph through its own embedding function (onnxruntime, CPU,
intra_op_num_threads = --threads, inter_op_num_threads = 1), so it never downloads its
default model.

Chunking on the chromadb side, as close to latentdb's as is reasonable: the text is cut into
paragraphs (blank lines), paragraphs longer than the budget into sentences (after . ! ?),
sentences longer than the budget into words; pieces are packed greedily while the chunk's
token count (the model's tokenizer, special tokens not counted) stays within
min(--chunk-tokens, 254); the next chunk starts with the previous chunk's last whole pieces
worth at most --chunk-overlap tokens. For texts within the budget both sides make exactly one
chunk per document. Both chunk counts are printed; docs/s is the comparable figure.

The clock, on both sides: from before the corpus file is read to after the last write is
durable (chromadb's PersistentClient writes through; latentdb flushes). Model loading and
collection creation are outside it on both sides.

    python3 -m venv /tmp/chromavenv
    /tmp/chromavenv/bin/pip install 'chromadb>=1,<2' onnxruntime tokenizers numpy onnx safetensors
    /tmp/chromavenv/bin/python scripts/ingest_chromadb.py --input corpus.jsonl \\
        --latentdb target/release/latentdb

Prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HIDDEN, HEADS, LAYERS, FFN, LN_EPS, MAX_LEN = 384, 12, 6, 1536, 1e-12, 256


def default_model_dir() -> Path:
    home = os.environ.get("LATENTDB_HOME")
    base = Path(home) / "models" if home else Path.home() / ".cache" / "latentdb" / "models"
    return base / "all-MiniLM-L6-v2"


def export_onnx(model_dir: Path, out: Path) -> None:
    """Writes all-MiniLM-L6-v2 (BERT, mean pooling, L2 norm) as an ONNX graph (opset 17)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import load_file

    w = load_file(str(model_dir / "model.safetensors"))
    inits: list = []
    nodes: list = []
    counter = [0]

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(arr, name))
        return name

    def node(op: str, inputs: list[str], **attrs) -> str:
        counter[0] += 1
        out_name = f"{op.lower()}_{counter[0]}"
        nodes.append(helper.make_node(op, inputs, [out_name], **attrs))
        return out_name

    def linear(x: str, prefix: str) -> str:
        wt = const(prefix + ".weight.T", np.ascontiguousarray(w[prefix + ".weight"].T))
        b = const(prefix + ".bias", w[prefix + ".bias"])
        return node("Add", [node("MatMul", [x, wt]), b])

    def layer_norm(x: str, prefix: str) -> str:
        g = const(prefix + ".weight", w[prefix + ".weight"])
        b = const(prefix + ".bias", w[prefix + ".bias"])
        return node("LayerNormalization", [x, g, b], axis=-1, epsilon=LN_EPS)

    i64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    f32 = lambda v: np.array(v, dtype=np.float32)  # noqa: E731

    # Embeddings: word + position + token type 0, then LayerNorm.
    word = const("word_embeddings", w["embeddings.word_embeddings.weight"])
    pos = const("position_embeddings", w["embeddings.position_embeddings.weight"])
    typ = const("token_type_0", w["embeddings.token_type_embeddings.weight"][0])
    # The sequence length as a 1-D tensor of one element (Gather with a 1-D index).
    seq = node("Gather", [node("Shape", ["input_ids"]), const("one", i64(1))], axis=0)
    pos_s = node("Slice", [pos, const("zero1", i64(0)), seq, const("axes0", i64(0))])
    x = node("Add", [node("Add", [node("Gather", [word, "input_ids"], axis=0), pos_s]), typ])
    x = layer_norm(x, "embeddings.LayerNorm")

    # Additive attention mask [B, 1, 1, S]: 0 where attended, -1e4 where padding.
    maskf = node("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    bias = node("Mul", [node("Sub", [const("onef", f32(1.0)), maskf]), const("neg", f32(-1e4))])
    bias = node("Unsqueeze", [bias, const("axes12", i64(1, 2))])

    head_dim = HIDDEN // HEADS
    split = const("split_shape", i64(0, 0, HEADS, head_dim))
    merge = const("merge_shape", i64(0, 0, HIDDEN))
    scale = const("scale", f32(1.0 / np.sqrt(head_dim)))
    sqrt2 = const("sqrt2", f32(np.sqrt(2.0)))
    half = const("half", f32(0.5))
    for i in range(LAYERS):
        p = f"encoder.layer.{i}"
        q = node("Transpose", [node("Reshape", [linear(x, p + ".attention.self.query"), split])],
                 perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [linear(x, p + ".attention.self.key"), split])],
                 perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [linear(x, p + ".attention.self.value"), split])],
                 perm=[0, 2, 1, 3])
        scores = node("Add", [node("Mul", [node("MatMul", [q, k]), scale]), bias])
        ctx = node("MatMul", [node("Softmax", [scores], axis=-1), v])
        ctx = node("Reshape", [node("Transpose", [ctx], perm=[0, 2, 1, 3]), merge])
        attn = linear(ctx, p + ".attention.output.dense")
        x = layer_norm(node("Add", [attn, x]), p + ".attention.output.LayerNorm")
        h = linear(x, p + ".intermediate.dense")
        gelu = node("Mul", [node("Mul", [h, half]),
                            node("Add", [const(f"one_{i}", f32(1.0)),
                                         node("Erf", [node("Div", [h, sqrt2])])])])
        x = layer_norm(node("Add", [linear(gelu, p + ".output.dense"), x]), p + ".output.LayerNorm")

    # Masked mean over the sequence, then L2 normalisation.
    m3 = node("Unsqueeze", [maskf, const("axes2", i64(2))])
    summed = node("ReduceSum", [node("Mul", [x, m3]), const("axes1", i64(1))], keepdims=0)
    count = node("ReduceSum", [m3, const("axes1b", i64(1))], keepdims=0)
    mean = node("Div", [summed, node("Max", [count, const("tiny", f32(1e-9))])])
    norm = node("Sqrt", [node("ReduceSumSquare", [mean], axes=[1], keepdims=1)])
    nodes.append(helper.make_node(
        "Div", [mean, node("Max", [norm, const("tiny2", f32(1e-12))])], ["embedding"]))

    graph = helper.make_graph(
        nodes, "all-MiniLM-L6-v2",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", HIDDEN])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(out)


def make_embedding_function(onnx_path: Path, model_dir: Path, threads: int):
    import onnxruntime as ort
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
    from tokenizers import Tokenizer

    class LocalMiniLM(EmbeddingFunction[Documents]):
        """all-MiniLM-L6-v2 on onnxruntime from local files (never downloads)."""

        def __init__(self, onnx_path: str, model_dir: str, threads: int) -> None:
            self.onnx_path, self.model_dir, self.threads = onnx_path, model_dir, threads
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            self.session = ort.InferenceSession(
                onnx_path, opts, providers=["CPUExecutionProvider"])
            self.tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
            self.tokenizer.enable_truncation(max_length=MAX_LEN)
            self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest
            self.seconds = 0.0  # time spent in `embed`

        def embed(self, texts: list[str]) -> np.ndarray:
            start = time.perf_counter()
            try:
                return self._embed(texts)
            finally:
                self.seconds += time.perf_counter() - start

        def _embed(self, texts: list[str]) -> np.ndarray:
            enc = self.tokenizer.encode_batch(list(texts))
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            (out,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
            return out

        def __call__(self, input: Documents) -> Embeddings:
            return list(self.embed(list(input)))

        @staticmethod
        def name() -> str:
            return "latentdb_bench_local_minilm"

        def get_config(self) -> dict:
            return {"onnx_path": self.onnx_path, "model_dir": self.model_dir,
                    "threads": self.threads}

        @staticmethod
        def build_from_config(config: dict) -> "LocalMiniLM":
            return LocalMiniLM(config["onnx_path"], config["model_dir"], config["threads"])

    return LocalMiniLM(str(onnx_path), str(model_dir), threads)


def check_against_latentdb(ef, latentdb: str, env: dict) -> float:
    """The smallest cosine between this graph's vectors and `latentdb embed`'s."""
    probes = ["hello world", "The quick brown fox jumps over the lazy dog.",
              "Vector databases store embeddings; " * 12, "a", "Ünïcödé text, naïve café"]
    p = subprocess.run([latentdb, "embed", "--model", "default"],
                       input="".join(json.dumps(t) + "\n" for t in probes),
                       capture_output=True, text=True, env=env, check=True)
    theirs = np.array([json.loads(line) for line in p.stdout.splitlines()], dtype=np.float64)
    ours = ef.embed(probes).astype(np.float64)
    cos = (theirs * ours).sum(1) / (np.linalg.norm(theirs, axis=1) * np.linalg.norm(ours, axis=1))
    return float(cos.min())


def read_corpus(path: Path, limit: int | None) -> list[tuple[str | None, str]]:
    docs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if limit is not None and len(docs) >= limit:
                break
            obj = json.loads(line)
            text = obj.get("text")
            if not isinstance(text, str):
                raise SystemExit(f"{path}:{n}: no \"text\" string")
            doc_id = obj.get("id")
            docs.append((str(doc_id) if doc_id is not None else None, text))
    return docs


_SENT = re.compile(r"(?<=[.!?])\s+")


def chunk(text: str, tokenizer, budget: int, overlap: int) -> list[str]:
    """Greedy packing of paragraphs, else sentences, else words (see the module doc)."""
    count = lambda s: len(tokenizer.encode(s, add_special_tokens=False).ids)  # noqa: E731

    pieces: list[tuple[str, int]] = []

    def add(piece: str, level: int) -> None:
        n = count(piece)
        if n <= budget or level == 2:
            if n > budget:  # a single word over budget: cut by tokens
                enc = tokenizer.encode(piece, add_special_tokens=False)
                for s in range(0, len(enc.ids), budget):
                    a, b = enc.offsets[s][0], enc.offsets[min(s + budget, len(enc.ids)) - 1][1]
                    pieces.append((piece[a:b], min(budget, len(enc.ids) - s)))
            else:
                pieces.append((piece, n))
            return
        parts = _SENT.split(piece) if level == 0 else piece.split()
        for part in parts:
            if part.strip():
                add(part, level + 1)

    for para in re.split(r"\n\s*\n", text):
        if para.strip():
            add(para.strip(), 0)
    chunks: list[str] = []
    current: list[tuple[str, int]] = []
    used = 0
    for piece, n in pieces:
        if current and used + n > budget:
            chunks.append(" ".join(p for p, _ in current))
            carry: list[tuple[str, int]] = []
            carried = 0
            for p, m in reversed(current):
                if carried + m > overlap or carried + m + n > budget:
                    break
                carry.insert(0, (p, m))
                carried += m
            current, used = carry, carried
        current.append((piece, n))
        used += n
    if current:
        chunks.append(" ".join(p for p, _ in current))
    return chunks


def run_chromadb(args, ef, tmp: Path) -> dict:
    import chromadb

    client = chromadb.PersistentClient(path=str(tmp / "chroma"))
    col = client.create_collection("bench", embedding_function=ef,
                                   configuration={"hnsw": {"space": "cosine"}})
    budget = min(args.chunk_tokens, MAX_LEN - 2)
    ef.seconds = 0.0
    chunk_s = 0.0
    start = time.perf_counter()
    docs = read_corpus(args.input, args.limit)
    ids: list[str] = []
    texts: list[str] = []
    metas: list[dict] = []
    chunks_total = 0

    def flush() -> None:
        if ids:
            col.add(ids=list(ids), documents=list(texts), metadatas=list(metas))
            ids.clear(), texts.clear(), metas.clear()

    for line, (doc_id, text) in enumerate(docs, 1):
        parent = doc_id if doc_id is not None else f"line{line}"
        t = time.perf_counter()
        parts = chunk(text, ef.tokenizer, budget, args.chunk_overlap)
        chunk_s += time.perf_counter() - t
        for i, c in enumerate(parts):
            ids.append(f"{parent}#{i}")
            texts.append(c)
            metas.append({"parent": parent, "chunk_index": i, "chunk_count": len(parts)})
            if len(ids) == args.batch_size:
                flush()
        chunks_total += len(parts)
    flush()
    seconds = time.perf_counter() - start
    stored = col.count()
    if stored != chunks_total:
        raise SystemExit(f"chromadb holds {stored} chunks, {chunks_total} were added")
    return {"documents": len(docs), "chunks": chunks_total, "seconds": seconds,
            "docs_per_s": len(docs) / seconds, "chunks_per_s": chunks_total / seconds,
            # Where chromadb's time went (one thread: these add up to at most `seconds`):
            # chunking here, the embedding function, and the rest (chromadb's add).
            "chunk_s": chunk_s, "embed_s": ef.seconds,
            "add_other_s": seconds - chunk_s - ef.seconds}


def add_common_args(ap: argparse.ArgumentParser) -> None:
    """The options this script shares with `embed_onnxruntime.py`."""
    ap.add_argument("--latentdb", default="target/release/latentdb", help="the CLI binary")
    ap.add_argument("--model-dir", type=Path, default=default_model_dir())
    ap.add_argument("--onnx", type=Path, default=None,
                    help="where the exported graph is kept (default: a temporary file)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)


def parse_common_args(ap: argparse.ArgumentParser) -> argparse.Namespace:
    """Parses the command line; the model directory must hold the weights."""
    args = ap.parse_args()
    if not (args.model_dir / "model.safetensors").is_file():
        raise SystemExit(f"{args.model_dir}: no model.safetensors; run `latentdb model fetch`")
    return args


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", type=Path, required=True, help="JSONL: {\"text\", \"id\"?}")
    add_common_args(ap)
    ap.add_argument("--chunk-tokens", type=int, default=256)
    ap.add_argument("--chunk-overlap", type=int, default=32)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--skip-latentdb", action="store_true", help="measure chromadb only")
    args = parse_common_args(ap)

    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    tmp = Path(tempfile.mkdtemp(prefix="ingest-chromadb-"))
    try:
        onnx_path = args.onnx or tmp / "all-MiniLM-L6-v2.onnx"
        if not onnx_path.is_file():
            export_onnx(args.model_dir, onnx_path)
        ef = make_embedding_function(onnx_path, args.model_dir, args.threads)
        report: dict = {"batch_size": args.batch_size, "threads": args.threads,
                        "chunk_tokens": args.chunk_tokens, "chunk_overlap": args.chunk_overlap}
        if not args.skip_latentdb:
            report["model_check_min_cosine"] = check_against_latentdb(ef, args.latentdb, env)
            if report["model_check_min_cosine"] < 0.9999:
                raise SystemExit(f"the ONNX graph disagrees with latentdb: {report}")
        import chromadb

        report["chromadb_version"] = chromadb.__version__
        report["chromadb"] = run_chromadb(args, ef, tmp)
        if not args.skip_latentdb:
            cmd = [args.latentdb, "--json", "bench", "ingest", "--input", str(args.input),
                   "--model", "default", "--batch-size", str(args.batch_size),
                   "--threads", str(args.threads), "--chunk-tokens", str(args.chunk_tokens),
                   "--chunk-overlap", str(args.chunk_overlap)]
            if args.limit is not None:
                cmd += ["--limit", str(args.limit)]
            p = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if p.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr}")
            lat = json.loads(p.stdout.strip().splitlines()[-1])
            report["latentdb"] = lat
            report["ratio_docs_per_s"] = lat["docs_per_s"] / report["chromadb"]["docs_per_s"]
            report["ratio_chunks_per_s"] = (lat["chunks_per_s"]
                                            / report["chromadb"]["chunks_per_s"])
        c = report["chromadb"]
        print(f"chromadb {report['chromadb_version']}: {c['documents']} docs, {c['chunks']} "
              f"chunks in {c['seconds']:.2f}s: {c['docs_per_s']:.1f} docs/s, "
              f"{c['chunks_per_s']:.1f} chunks/s", file=sys.stderr)
        if "latentdb" in report:
            lat = report["latentdb"]
            print(f"latentdb: {lat['documents']} docs, {lat['chunks']} chunks in "
                  f"{lat['seconds']:.2f}s: {lat['docs_per_s']:.1f} docs/s, "
                  f"{lat['chunks_per_s']:.1f} chunks/s; ratio (docs/s) "
                  f"{report['ratio_docs_per_s']:.2f}x", file=sys.stderr)
        print(json.dumps(report))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
