"""Hugging Face datasets as a stream of documents, read with the `datasets` library:

    dataset=hf dataset.hf_path=HuggingFaceFW/fineweb-edu dataset.hf_config=sample-10BT   # the hub, streamed
    dataset=hf dataset.hf_path=/data/fineweb                                             # a local copy

From the hub the records are streamed (nothing is downloaded whole, nothing is cached); a local
copy is a folder of data files (parquet, jsonl/json, csv, arrow), one such file, or a folder that
`Dataset.save_to_disk` wrote. Either way memory holds a batch of records at a time, whatever the size.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from types import ModuleType
from urllib.parse import urlparse

from nanogpt.errors import DataError, first_line, install_hint
from nanogpt.files import file_sha256

log = logging.getLogger(__name__)

# Seconds to wait for the hub's first answer before saying it cannot be reached.
HUB_PROBE_TIMEOUT_S = 3
# Records fetched from the dataset at a time.
RECORD_BATCH = 1000
# What a local folder written by Dataset.save_to_disk (or DatasetDict.save_to_disk) holds.
SAVED_MARKERS = ("state.json", "dataset_dict.json")
LOCAL_COPY = "a local copy works offline: a folder of parquet/jsonl files, or one that Dataset.save_to_disk wrote"


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face dataset: a hub name or a local copy, one of its configs and splits, and the
    record field that holds the text."""

    path: str
    config: str | None = None
    split: str = "train"
    text_field: str = "text"

    @property
    def local(self) -> Path | None:
        path = Path(self.path).expanduser()
        return path if path.exists() else None

    def fingerprint(self) -> str:
        """What identifies the records: a local copy's files and their contents; for the hub, its
        name, config and split (the hub's copy may change; re-prepare with force=true)."""
        digest = hashlib.sha256(f"{self.config}\0{self.split}\0{self.text_field}\n".encode())
        local = self.local
        if local is None:
            digest.update(f"hub:{self.path}".encode())
            return digest.hexdigest()
        files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
        for path in files:
            digest.update(f"{path.relative_to(local) if local.is_dir() else path.name}\0{file_sha256(path)}\n".encode())
        return digest.hexdigest()

    def describe(self) -> str:
        config = f" ({self.config})" if self.config else ""
        return f"{self.path}{config}, split {self.split}"

    def records(self) -> tuple[Iterator[str], int | None]:
        """The text of every record, in order, and how many records there are (None when the
        hub does not say). Records whose text is empty are skipped."""
        dataset, count = self._open()
        return self._texts(dataset), count

    def _open(self) -> tuple[object, int | None]:
        datasets = _import_datasets()
        local = self.local
        try:
            if local is not None and local.is_dir() and any((local / name).is_file() for name in SAVED_MARKERS):
                dataset = datasets.load_from_disk(str(local))
                if isinstance(dataset, datasets.DatasetDict):
                    if self.split not in dataset:
                        raise DataError(f"dataset.hf_split={self.split!r} is not in {local} (its splits: {', '.join(dataset)}); set dataset.hf_split")
                    dataset = dataset[self.split]
                return dataset, len(dataset)
            if local is not None:
                dataset = _load_local(datasets, local, self.config, self.split)
            else:
                dataset = self._load_from_hub(datasets)
        except DataError:
            raise
        except ValueError as exc:  # an unknown config or split: the message lists the ones there are
            key = "dataset.hf_split" if "split" in str(exc).lower() else "dataset.hf_config"
            raise DataError(f"dataset.hf_path={self.path!r}: {first_line(exc)}; set {key}") from None
        except (OSError, datasets.exceptions.DatasetNotFoundError) as exc:
            raise DataError(f"dataset.hf_path={self.path!r}: cannot load it ({first_line(exc)}); {LOCAL_COPY}") from None
        splits = dataset.info.splits or {}
        count = splits[self.split].num_examples if self.split in splits else None
        return dataset, count or None

    def _load_from_hub(self, datasets: ModuleType) -> object:
        """Stream the dataset from the hub. Without a network this fails within seconds, instead of
        after the hub client's retries (about 30 s)."""
        import huggingface_hub
        from huggingface_hub import constants
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

        logging.getLogger("huggingface_hub").handlers.clear()
        if constants.HF_HUB_OFFLINE:
            raise DataError(f"dataset.hf_path={self.path!r} names a dataset on the hub, and HF_HUB_OFFLINE=1 forbids reading it; {LOCAL_COPY}")
        try:
            # One request without retries: does the hub answer, and does it know this dataset?
            huggingface_hub.HfApi().dataset_info(self.path, timeout=HUB_PROBE_TIMEOUT_S)
        except RepositoryNotFoundError:
            raise DataError(
                f"dataset.hf_path={self.path!r}: no such dataset on the hub (or it is private), and no such local folder; "
                f"check the name, log in with `hf auth login`, or use a local copy"
            ) from None
        except HfHubHTTPError:
            pass  # it answers; loading below reports what it said
        except Exception as exc:  # noqa: BLE001 - the HTTP client's own errors (requests or httpx, by huggingface_hub version)
            host = urlparse(constants.ENDPOINT).netloc
            raise DataError(f"dataset.hf_path={self.path!r}: {host} cannot be reached ({first_line(exc)}); {LOCAL_COPY}") from None
        return datasets.load_dataset(self.path, self.config, split=self.split, streaming=True)

    def _texts(self, dataset: object) -> Iterator[str]:
        names = getattr(dataset, "column_names", None)
        if names is not None and self.text_field not in names:
            raise self._no_text_field(names)
        index = 0
        for batch in dataset.select_columns([self.text_field]).iter(batch_size=RECORD_BATCH):
            texts = batch.get(self.text_field)
            if texts is None:  # streamed JSON has no schema up front: the first batch tells
                raise self._no_text_field(list(batch))
            for text in texts:
                if not isinstance(text, str):
                    raise DataError(
                        f"dataset.text_field={self.text_field!r}: record {index} of {self.describe()} holds "
                        f"{type(text).__name__}, not text; choose the field that holds the text"
                    )
                index += 1
                if text:
                    yield text

    def _no_text_field(self, names: list[str]) -> DataError:
        return DataError(
            f"dataset.text_field={self.text_field!r} is not a field of {self.describe()} (its fields: {', '.join(names)}); set dataset.text_field"
        )


# datasets' builders for single local files, by suffix.
BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv", ".arrow": "arrow"}


def hub_unreachable(url: str | None = None) -> str | None:
    """Why the Hugging Face hub does not answer, in a few words; None where it answers at all (any
    HTTP status). One HEAD request (to `url`, else the hub's endpoint), no retries, at most
    HUB_PROBE_TIMEOUT_S: the hub client's own first request retries for half a minute. Plain urllib,
    so that asking imports neither huggingface_hub nor datasets."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(urllib.request.Request(url or endpoint, method="HEAD"), timeout=HUB_PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None  # it answers
    except (OSError, HTTPException, ValueError) as exc:
        return first_line(exc.reason if isinstance(exc, urllib.error.URLError) else exc)  # not "<urlopen error ...>"
    return None


def _load_local(datasets: ModuleType, path: Path, config: str | None, split: str) -> object:
    if path.is_file():
        builder = BUILDERS.get(path.suffix)
        if builder is None:
            raise DataError(f"dataset.hf_path={str(path)!r}: a {path.suffix or 'suffix-less'} file; expected one of {', '.join(BUILDERS)}")
        return datasets.load_dataset(builder, data_files={split: str(path)}, split=split, streaming=True)
    return datasets.load_dataset(str(path), config, split=split, streaming=True)


def _import_datasets() -> ModuleType:
    try:
        import datasets
    except ImportError:
        raise DataError(f"dataset.hf_path needs Hugging Face datasets: {install_hint('hf')} (or pip install datasets)") from None
    # datasets' progress bars and "Resolving data files" notes would interleave with ours.
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets
