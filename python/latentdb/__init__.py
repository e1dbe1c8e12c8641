"""latentdb: an embedded vector database with a built-in text embedder, in-process.

    import latentdb
    db = latentdb.open("./mydb")
    col = db.create_collection("notes", model="default")   # or dim=384, metric="cosine"
    col.upsert(["a", "b"], texts=["Rust is fast", "Pandas eat bamboo"])
    print(col.search(text="programming languages", k=1)[0].id)

Vectors go in and come out as float32 numpy arrays (lists are accepted too); metadata and
filters are dicts (filter syntax: ``{"year": {"$gte": 2020}}``, operators ``$eq $ne $gt $gte
$lt $lte $in $nin $exists $and $or $not``). Every call that does real work releases the GIL;
long calls check for Ctrl-C between batches. Errors are subclasses of `LatentDbError`, one
per kind: `InvalidArgumentError` (also a `ValueError`), `NotFoundError` (also a
`LookupError`), `AlreadyExistsError`, `FailedPreconditionError`, `ResourceExhaustedError`,
`UnavailableError`, `CancelledError`, `DeadlineExceededError`, `DataLossError`,
`InternalError`.

The LangChain and LlamaIndex adapters are in `latentdb.langchain` and `latentdb.llama_index`
(imported only when used; they need the framework installed).
"""

from latentdb._latentdb import (
    MAX_EF,
    MAX_K,
    AlreadyExistsError,
    CancelledError,
    Collection,
    Database,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    Hit,
    InternalError,
    InvalidArgumentError,
    LatentDbError,
    NotFoundError,
    Record,
    ResourceExhaustedError,
    UnavailableError,
    __version__,
    default_model_path,
    fetch_default_model,
    open,
)

__all__ = [
    "MAX_EF",
    "MAX_K",
    "AlreadyExistsError",
    "CancelledError",
    "Collection",
    "Database",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "Hit",
    "InternalError",
    "InvalidArgumentError",
    "LatentDbError",
    "NotFoundError",
    "Record",
    "ResourceExhaustedError",
    "UnavailableError",
    "__version__",
    "default_model_path",
    "fetch_default_model",
    "open",
]
